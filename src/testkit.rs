//! Helpers for tests that run processors on the local stack (DESIGN.md section 4): topics under a
//! unique prefix, the repository's sink connectors pointed at them and at a fresh database,
//! change events published as the MongoDB source connector writes them, whole collections read
//! back. Public so every processor crate's tests share them; not used by the binaries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bson::{Document, doc};
use futures::TryStreamExt as _;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::cdc::{self, ChangeEvent, extjson::Dialect};
use crate::endpoints::Endpoints;
use crate::ops::connectors::{Connect, ConnectorAction, ConnectorsPlan, desired};
use crate::ops::kafka;
use crate::ops::topics::{Action, Desired, DesiredTopic, TopicsPlan, plan};
use crate::streams::OutValue;
use crate::streams::codec::AvroCodec;

/// A name no other test run uses: `<what>-<uuid>`.
pub fn unique(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

/// The repository root, from the runtime `CARGO_MANIFEST_DIR` of a crate `depth` levels below it
/// (read at run time: a target dir shared between clones may run a binary built in another).
///
/// # Panics
/// Outside cargo.
pub fn repo_root(depth: usize) -> PathBuf {
    let mut root = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR")
            .expect("run through cargo, which sets CARGO_MANIFEST_DIR"),
    );
    for _ in 0..depth {
        root.push("..");
    }
    root
}

/// `scripts/stack <action> <component> [flag]` of the repository `depth` levels above the crate
/// (fault tests take a component of the shared stack away and bring it back).
///
/// # Panics
/// When the script fails.
pub fn stack(depth: usize, action: &str, component: &str, flag: Option<&str>) {
    let script = repo_root(depth).join("scripts/stack");
    let status = std::process::Command::new("bash")
        .arg(script)
        .args([action, component])
        .args(flag)
        .status()
        .expect("running scripts/stack");
    assert!(
        status.success(),
        "scripts/stack {action} {component} failed"
    );
}

/// Creates `<prefix><name>` for each `(name, partitions)` (replication 1), plus the shared
/// `connect.sink.dlq` the sink connectors need, where missing.
///
/// # Errors
/// Kafka unreachable (the message says how to start the stack) or a create refused.
pub async fn create_topics(
    endpoints: &Endpoints,
    prefix: &str,
    topics: &[(&str, i32)],
) -> anyhow::Result<()> {
    let mut desired: BTreeMap<String, DesiredTopic> = topics
        .iter()
        .map(|(name, partitions)| {
            let name = format!("{prefix}{name}");
            let topic = DesiredTopic {
                name: name.clone(),
                partitions: *partitions,
                replication_factor: 1,
                configs: BTreeMap::new(),
            };
            (name, topic)
        })
        .collect();
    desired.insert(
        "connect.sink.dlq".into(),
        DesiredTopic {
            name: "connect.sink.dlq".into(),
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::new(),
        },
    );
    let desired = Desired {
        prefix: String::new(),
        topics: desired,
    };
    // Tests running side by side create the shared `connect.sink.dlq` too: one that another
    // created between this one's look and its create is planned again from a fresh look.
    for attempt in 1.. {
        let observed = kafka::observe(&endpoints.kafka_brokers)
            .await
            .with_context(|| {
                format!(
                    "Kafka at {} is not reachable: start the local stack with `scripts/stack up`",
                    endpoints.kafka_brokers
                )
            })?;
        let creates = TopicsPlan {
            actions: plan(&desired, &observed, false)?
                .actions
                .into_iter()
                .filter(|a| matches!(a, Action::Create(_)))
                .collect(),
        };
        match kafka::apply(&endpoints.kafka_brokers, &creates, |_| {}).await {
            Err(error) if attempt < 3 && error.to_string().contains("TopicAlreadyExists") => {}
            done => return Ok(done?),
        }
    }
    unreachable!("the loop returns by its third attempt")
}

/// Deploys, under unique names, the repository's connectors (from `dir`) whose topic `wanted`
/// accepts, reading `<prefix><topic>` and writing into `database`. Returns their names.
///
/// # Errors
/// Unreadable connector files or Connect refusing one.
pub async fn deploy_sinks(
    endpoints: &Endpoints,
    dir: &Path,
    wanted: impl Fn(&str) -> bool,
    prefix: &str,
    database: &str,
) -> anyhow::Result<Vec<String>> {
    let connect = Connect::new(&endpoints.connect_url);
    let mut deployed = Vec::new();
    for connector in desired(dir)? {
        let Some(topic) = connector
            .config
            .get("topics")
            .filter(|t| wanted(t))
            .cloned()
        else {
            continue;
        };
        let mut config = connector.config.clone();
        config.insert("topics".into(), format!("{prefix}{topic}"));
        config.insert("database".into(), database.to_owned());
        let name = unique(&format!("test-{}", connector.name));
        let create = ConnectorsPlan {
            actions: vec![ConnectorAction::Create {
                name: name.clone(),
                config,
            }],
        };
        connect.apply(&create, |_| {}).await?;
        deployed.push(name);
    }
    Ok(deployed)
}

/// The runner settings of a test or bench on the local stack: its brokers and registry, the
/// deployment prefix `prefix`, no admin endpoint; the rest defaults.
pub fn runner_config(
    endpoints: &crate::endpoints::Endpoints,
    prefix: &str,
) -> crate::streams::kafka::StreamsSettings {
    crate::streams::kafka::StreamsSettings {
        brokers: endpoints.kafka_brokers.clone(),
        schema_registry_url: endpoints.schema_registry_url(),
        topic_prefix: prefix.to_owned(),
        admin_addr: None,
        ..Default::default()
    }
}

/// A change event of a `clinic` collection as the source connector reports it, keyed by `id`
/// (with a resume token made of it), with no update description; callers set what their case
/// needs with struct update syntax. The one builder of change events for tests and benches.
pub fn change(
    operation: cdc::Operation,
    coll: &str,
    id: impl Into<bson::Bson>,
    full: Option<Document>,
) -> ChangeEvent {
    let id = id.into();
    let token = match &id {
        bson::Bson::ObjectId(oid) => oid.to_hex(),
        bson::Bson::String(text) => text.clone(),
        other => other.to_string(),
    };
    ChangeEvent {
        operation,
        namespace: Some(cdc::Namespace {
            db: "clinic".into(),
            coll: Some(coll.into()),
        }),
        document_key: doc! { "_id": id },
        full_document: full,
        updated_fields: Document::new(),
        removed_fields: Vec::new(),
        truncated_arrays: Vec::new(),
        source: cdc::SourcePosition {
            resume_token: Some(doc! { "_data": token }),
            ..Default::default()
        },
    }
}

/// The benchmarks' patient document number `n` of the clinic `clinic`: realistic fields, ~300
/// bytes of Avro change event (`_id` a fresh ObjectId).
pub fn bench_patient(n: usize, clinic: bson::oid::ObjectId) -> Document {
    use bson::oid::ObjectId;
    let millis = 1_700_000_000_000 + i64::try_from(n).unwrap_or(i64::MAX - 1_700_000_000_000);
    doc! {
        "_id": ObjectId::new(), "clinicId": clinic, "userId": format!("user{n:08}"),
        "fullName": format!("Patient Number {n}"), "birthDate": "1990-04-05",
        "email": format!("patient{n}@example.org"), "mrn": format!("MRN{n}"),
        "permissions": { "view": {}, "upload": {} }, "tags": [ObjectId::new()],
        "createdTime": bson::DateTime::from_millis(millis),
        "updatedTime": bson::DateTime::from_millis(millis),
    }
}

/// Every topic a processor's topology reads or writes: inputs, outputs, changelogs, DLQ.
pub fn topics_of(topology: &crate::streams::Topology) -> Vec<String> {
    let mut topics = topology.input_topics();
    topics.extend(
        topology
            .outputs
            .iter()
            .map(|t| topology.kafka_topic(t))
            .filter(|t| !topics.contains(t))
            .collect::<Vec<_>>(),
    );
    topics.extend(topology.stores.iter().map(|s| topology.changelog_topic(s)));
    topics.push(topology.dlq_topic());
    topics
}

/// Topics under a fresh prefix with the repository's sink connectors on them, writing into a
/// fresh database: what every stack test of a processor starts from.
pub struct SinkChain {
    /// The topic prefix (`<what>-<uuid>.`).
    pub prefix: String,
    /// The database the sinks write.
    pub db: mongodb::Database,
    /// The deployed connectors' names (for [`remove_sinks`]).
    pub sinks: Vec<String>,
}

impl SinkChain {
    /// Creates `topics` (name, partitions) under a prefix named after `what`, deploys the
    /// connectors of the repository at `root` whose topic `wanted` accepts, and opens the
    /// database they write.
    ///
    /// # Errors
    /// Kafka, Connect or MongoDB refusing.
    pub async fn new(
        endpoints: &Endpoints,
        what: &str,
        root: &Path,
        topics: &[(&str, i32)],
        wanted: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Self> {
        let prefix = format!("{}.", unique(what));
        let database = unique("db");
        create_topics(endpoints, &prefix, topics).await?;
        let sinks = deploy_sinks(
            endpoints,
            &root.join("connectors"),
            wanted,
            &prefix,
            &database,
        )
        .await?;
        let db = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
            .await?
            .database(&database);
        Ok(Self { prefix, db, sinks })
    }
}

/// Deploys the repository's sink connector (from `dir`) of `topic` as the deployment under
/// `prefix` runs it (named, reading and dead-lettering under the prefix:
/// [`crate::ops::connectors::DesiredConnector::of_deployment`]), writing into `database`.
/// Returns its name.
///
/// # Errors
/// Unreadable connector files, no connector of `topic`, or Connect refusing it.
pub async fn deploy_deployment_sink(
    endpoints: &Endpoints,
    dir: &Path,
    topic: &str,
    prefix: &str,
    database: &str,
) -> anyhow::Result<String> {
    let mut connector = desired(dir)?
        .into_iter()
        .find(|c| c.config.get("topics").map(String::as_str) == Some(topic))
        .with_context(|| format!("no connector in {} reads {topic}", dir.display()))?
        .of_deployment(prefix);
    connector
        .config
        .insert("database".into(), database.to_owned());
    let create = ConnectorsPlan {
        actions: vec![ConnectorAction::Create {
            name: connector.name.clone(),
            config: connector.config,
        }],
    };
    Connect::new(&endpoints.connect_url)
        .apply(&create, |_| {})
        .await?;
    Ok(connector.name)
}

/// Deletes connectors `deploy_sinks` made.
///
/// # Errors
/// Connect refusing.
pub async fn remove_sinks(endpoints: &Endpoints, names: &[String]) -> anyhow::Result<()> {
    let connect = Connect::new(&endpoints.connect_url);
    for name in names {
        connect.delete(name).await?;
    }
    Ok(())
}

/// Publishes change events to `<prefix><topic>` as the MongoDB source connector writes them:
/// its default Avro change-stream schema (Confluent-framed through the registry), keyed by
/// `documentKey` as JSON. Sends up to 1,000 at a time; order per topic and key is kept
/// (idempotent producer, one partition per key).
///
/// # Errors
/// Registry or broker failures.
pub async fn publish_changes(
    endpoints: &Endpoints,
    prefix: &str,
    events: &[(&str, ChangeEvent)],
) -> anyhow::Result<()> {
    let codec = AvroCodec::new(&endpoints.schema_registry_url());
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &endpoints.kafka_brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    for chunk in events.chunks(1_000) {
        let mut records = Vec::with_capacity(chunk.len());
        for (topic, event) in chunk {
            let topic = format!("{prefix}{topic}");
            let value = OutValue::Avro {
                schema: Arc::from(cdc::mongo::MONGO_CHANGE_STREAM_SCHEMA),
                value: cdc::mongo::to_avro(event, Dialect::Legacy),
            };
            let bytes = codec.encode(&topic, &value).await?;
            let key = cdc::mongo::key_json(event, Dialect::Legacy).to_string();
            records.push((topic, key, bytes));
        }
        let sends = records.iter().map(|(topic, key, bytes)| {
            let producer = &producer;
            async move {
                producer
                    .send(
                        FutureRecord::to(topic).key(key).payload(bytes),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .with_context(|| format!("producing to {topic}"))
            }
        });
        futures::future::try_join_all(sends).await?;
    }
    Ok(())
}

/// Every document of a collection, ordered by `_id`'s Extended JSON text.
///
/// # Errors
/// Mongo failures.
pub async fn collection(db: &mongodb::Database, name: &str) -> anyhow::Result<Vec<Document>> {
    let mut docs: Vec<Document> = db
        .collection::<Document>(name)
        .find(doc! {})
        .await?
        .try_collect()
        .await?;
    docs.sort_by_key(id_order);
    Ok(docs)
}

/// The order [`collection`] returns documents in, to sort expectations alike.
pub fn id_order(document: &Document) -> String {
    document
        .get("_id")
        .map(|id| id.clone().into_relaxed_extjson().to_string())
        .unwrap_or_default()
}

/// Polls `collections` until each equals its expectation (sorted with [`id_order`]) or
/// `timeout` passes; returns what was seen last, per collection, for the caller to assert on.
///
/// # Errors
/// Mongo failures.
pub async fn await_collections(
    db: &mongodb::Database,
    expected: &BTreeMap<&str, Vec<Document>>,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, Vec<Document>>> {
    let expected: BTreeMap<&str, Vec<Document>> = expected
        .iter()
        .map(|(name, docs)| {
            let mut docs = docs.clone();
            docs.sort_by_key(id_order);
            (*name, docs)
        })
        .collect();
    let deadline = Instant::now() + timeout;
    loop {
        let mut seen = BTreeMap::new();
        for name in expected.keys() {
            seen.insert((*name).to_owned(), collection(db, name).await?);
        }
        let done = expected
            .iter()
            .all(|(name, docs)| seen.get(*name) == Some(docs));
        if done || Instant::now() > deadline {
            return Ok(seen);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs a processor with `config` until `expected` is in `db` (or two minutes pass), then stops
/// it cleanly; what the collections held, for the caller to assert on.
///
/// # Panics
/// When the runner fails or does not stop cleanly.
pub async fn run_until_synced<P, F>(
    config: crate::streams::kafka::StreamsSettings,
    factory: F,
    db: &mongodb::Database,
    expected: &BTreeMap<&str, Vec<Document>>,
) -> BTreeMap<String, Vec<Document>>
where
    P: crate::streams::Processor + 'static,
    F: Fn() -> P + Send + 'static,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    let shutdown = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(crate::streams::runner::run_until(
        config,
        factory,
        Arc::clone(&shutdown),
        Arc::new(crate::streams::kafka::Health::default()),
    ));
    let seen = await_collections(db, expected, Duration::from_secs(120))
        .await
        .expect("reading the collections");
    shutdown.store(true, Ordering::SeqCst);
    running
        .await
        .expect("the runner task joins")
        .expect("the runner stops cleanly");
    seen
}

/// A processor binary running as its own process on the local stack (for tests that kill it or
/// take a component away under it): the stack's brokers and registry, the topic `prefix`, a
/// fixed instance id (static membership: a restart gets its partitions back at once), an admin
/// endpoint on a free port, stderr to `log`.
pub struct Spawned {
    child: std::process::Child,
    /// Its log file.
    pub log: PathBuf,
    /// Its admin endpoint.
    pub admin: std::net::SocketAddr,
}

impl Spawned {
    /// Starts `binary` with `env` on top of the stack's settings; `RUST_LOG` is `rust_log`.
    ///
    /// # Panics
    /// When no port is free or the binary does not start.
    pub fn start(
        binary: &Path,
        endpoints: &Endpoints,
        prefix: &str,
        log: PathBuf,
        rust_log: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let admin = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = std::process::Command::new(binary)
            .env("CLINIC__STREAMS__BROKERS", &endpoints.kafka_brokers)
            .env(
                "CLINIC__STREAMS__SCHEMA_REGISTRY_URL",
                endpoints.schema_registry_url(),
            )
            .env("CLINIC__STREAMS__TOPIC_PREFIX", prefix)
            .env("CLINIC__STREAMS__INSTANCE_ID", "test-instance")
            .env("CLINIC__STREAMS__ADMIN_ADDR", admin.to_string())
            .env("RUST_LOG", rust_log)
            .env_remove("CLINIC_LOG_FORMAT")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        Self { child, log, admin }
    }

    /// Whether it exited, and how.
    ///
    /// # Panics
    /// When the process cannot be waited for.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    /// SIGKILL: gone at once, mid-transaction or not.
    ///
    /// # Panics
    /// When the process cannot be waited for.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        self.child.wait().expect("wait");
    }

    /// SIGTERM; its exit status and its whole log.
    ///
    /// # Panics
    /// When the process cannot be waited for or its log read.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let status = self.child.wait().expect("wait");
        let log = std::fs::read_to_string(&self.log).expect("the processor's log");
        (status, log)
    }
}

impl Drop for Spawned {
    /// A test that fails before stopping it does not leave it running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits (up to 90 s) until each of `instances` holds exactly one partition of `topic` in its
/// `/status` (every member has joined and the group settled).
///
/// # Panics
/// When they do not within the time.
pub async fn await_spread<'a>(
    instances: impl IntoIterator<Item = &'a Spawned> + Clone,
    topic: &str,
) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut held = Vec::new();
        for instance in instances.clone() {
            let status: Option<serde_json::Value> = match http
                .get(format!("http://{}/status", instance.admin))
                .send()
                .await
            {
                Ok(answer) => answer.json().await.ok(),
                Err(_) => None,
            };
            let partitions = status
                .as_ref()
                .and_then(|s| s["work"]["assigned"][topic].as_object())
                .map_or(0, serde_json::Map::len);
            held.push(partitions);
        }
        if held.iter().all(|p| *p == 1) {
            return;
        }
        assert!(Instant::now() < deadline, "partitions held: {held:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How often each key appears in the committed records of `topic`: among its tombstones, or
/// among its values.
pub fn key_counts(brokers: &str, topic: &str, tombstones: bool) -> BTreeMap<String, usize> {
    use rdkafka::message::Message as _;
    let mut counts = BTreeMap::new();
    for record in read_topic(brokers, topic) {
        if record.payload().is_none() == tombstones {
            let key = String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
            *counts.entry(key).or_default() += 1;
        }
    }
    counts
}

/// Every committed record of `topic` (all partitions, `read_committed`), read from the beginning
/// to the end each partition had when the read began.
///
/// # Panics
/// When the topic cannot be read to its end within a minute.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::error::KafkaError;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    let partitions = metadata.topics()[0].partitions().len();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(
                topic,
                i32::try_from(p).expect("few"),
                rdkafka::Offset::Beginning,
            )
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let (mut records, mut ended) = (Vec::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ended < partitions && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => records.push(message.detach()),
            Some(Err(KafkaError::PartitionEOF(_))) => ended += 1,
            _ => {}
        }
    }
    assert_eq!(ended, partitions, "{topic} was not read to its end");
    records
}

/// Sends `record` through `producer`, serving its callbacks while its queue is full (benches
/// producing millions of records ahead of a run); then serves what is due.
pub fn send_waiting<K, P>(
    producer: &rdkafka::producer::BaseProducer,
    mut record: rdkafka::producer::BaseRecord<'_, K, P>,
) where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => break,
            Err((_, back)) => {
                producer.poll(Duration::from_millis(10));
                record = back;
            }
        }
    }
    producer.poll(Duration::ZERO);
}

/// This process's resident set size, MiB (0 where `/proc` is not there).
pub fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// This process's peak resident set size so far, MiB (0 where `/proc` is not there).
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// The peak resident set size so far of the process `pid` (`"self"` for this one), MiB.
pub fn peak_rss_mib_of(pid: &str) -> f64 {
    status_mib_of(pid, "VmHWM:")
}

/// The CPU time (user and system) the process `pid` (`"self"` for this one) used so far,
/// seconds, from `/proc/<pid>/stat` (0 where it is not there).
pub fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A size field of `/proc/self/status`, MiB.
fn status_mib(field: &str) -> f64 {
    status_mib_of("self", field)
}

/// A size field of `/proc/<pid>/status`, MiB.
fn status_mib_of(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Waits until consumer group `group` has committed the end (as it stands now) of every
/// partition of `topics`: a processor has read them.
///
/// # Panics
/// When the group stops committing for `timeout`, or Kafka cannot be asked.
pub fn await_committed(brokers: &str, group: &str, topics: &[String], timeout: Duration) {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut ends = Vec::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        for p in 0..metadata.topics()[0].partitions().len() {
            let p = i32::try_from(p).expect("few");
            let (_, end) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            ends.push((topic.clone(), p, end));
        }
    }
    await_offsets(&consumer, &ends, timeout);
}

/// Waits until the group of `topology` (under `prefix`) has read everything that stands now on
/// its inputs from outside the processor, then what it routed from them through its
/// repartition topics: the processor has acted on all of it, and a repeat would be committed.
///
/// # Panics
/// As [`await_committed`].
pub fn await_processed(
    brokers: &str,
    prefix: &str,
    topology: &crate::streams::Topology,
    timeout: Duration,
) {
    let group = format!("{prefix}{}", topology.group_id());
    let sources: Vec<String> = topology
        .partitioned_inputs()
        .filter(|i| !topology.is_repartition(&i.topic))
        .map(|i| format!("{prefix}{}", i.topic))
        .collect();
    await_committed(brokers, &group, &sources, timeout);
    for routed in &topology.repartitions {
        let topic = format!("{prefix}{}", topology.repartition_topic(routed));
        await_consumed(brokers, &group, &topic, timeout);
    }
}

/// Stops each of `instances` (by name) cleanly, asserting it exits with success, and prints the
/// lines of its log that tell what it held and what went wrong (assignments, WARN, ERROR).
///
/// # Panics
/// When an instance does not exit with success.
pub fn stop_all<'a>(instances: impl IntoIterator<Item = (&'a str, Spawned)>) {
    for (id, instance) in instances {
        let (status, text) = instance.stop();
        assert!(status.success(), "instance {id}: exit {status}: {text}");
        eprintln!(
            "=== {id}\n{}",
            text.lines()
                .filter(|l| l.contains("assigned") || l.contains("WARN") || l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Waits until consumer group `group` has committed past the last committed record (as it
/// stands now) of every partition of `topic`: for a topic written in transactions, whose end
/// is a commit marker no consumer commits past.
///
/// # Panics
/// As [`await_committed`].
pub fn await_consumed(brokers: &str, group: &str, topic: &str, timeout: Duration) {
    use rdkafka::message::Message as _;
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for record in read_topic(brokers, topic) {
        let at = last.entry(record.partition()).or_default();
        *at = (*at).max(record.offset() + 1);
    }
    let ends: Vec<(String, i32, i64)> = last
        .into_iter()
        .map(|(p, end)| (topic.to_owned(), p, end))
        .collect();
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    await_offsets(&consumer, &ends, timeout);
}

fn await_offsets(
    consumer: &rdkafka::consumer::BaseConsumer,
    ends: &[(String, i32, i64)],
    timeout: Duration,
) {
    use rdkafka::consumer::Consumer as _;
    let deadline = Instant::now() + timeout;
    loop {
        let mut wanted = rdkafka::TopicPartitionList::new();
        for (topic, p, _) in ends {
            wanted.add_partition(topic, *p);
        }
        let committed = consumer
            .committed_offsets(wanted, Duration::from_secs(10))
            .expect("committed offsets");
        let done = ends.iter().all(|(topic, p, end)| {
            *end == 0
                || committed.find_partition(topic, *p).is_some_and(
                    |e| matches!(e.offset(), rdkafka::Offset::Offset(at) if at >= *end),
                )
        });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the processor stopped committing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
