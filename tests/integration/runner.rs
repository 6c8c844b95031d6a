//! The Kafka runner against the real broker: exactly-once and at-least-once through repeated
//! SIGKILLs, two instances with one restarted, and state restored from changelogs. The processor
//! under test is `examples/counter_processor.rs`, run as a child process so it can be killed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clinic::endpoints::Endpoints;
use clinic::smoke::unique;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::helpers;

const PARTITIONS: i32 = 3;
const KEYS: usize = 97;

/// A fresh set of the counter's topics under a unique prefix.
pub struct Fixture {
    pub endpoints: Endpoints,
    pub prefix: String,
    /// The counter's `streams.state_dir` (its counts on disk), when set.
    pub state_dir: Option<PathBuf>,
}

impl Fixture {
    /// The counter processor's topics.
    pub async fn new(partitions: i32) -> Self {
        Self::with_topics(
            partitions,
            &["in", "out", "counter.dlq", "counter.counts.changelog"],
        )
        .await
    }

    /// These topics (`*.changelog` and `*.done` compacted), `partitions` each, under a fresh
    /// prefix.
    pub async fn with_topics(partitions: i32, names: &[&str]) -> Self {
        let endpoints = helpers::stack(&["kafka"]).await;
        let prefix = format!("{}.", unique("runner"));
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &endpoints.kafka_brokers)
            .create()
            .expect("admin client");
        let names: Vec<String> = names.iter().map(|t| format!("{prefix}{t}")).collect();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| {
                let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
                if name.ends_with(".changelog") || name.ends_with(".done") {
                    topic.set("cleanup.policy", "compact")
                } else {
                    topic
                }
            })
            .collect();
        for result in admin
            .create_topics(&topics, &AdminOptions::new())
            .await
            .expect("create topics")
        {
            result.expect("topic created");
        }
        Self {
            endpoints,
            prefix,
            state_dir: None,
        }
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Produces `count` records `{"k", "seq"}` keyed by `k`, seq from `first`.
    pub async fn produce(&self, first: usize, count: usize) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.endpoints.kafka_brokers)
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        let topic = self.topic("in");
        let sends: Vec<_> = (first..first + count)
            .map(|seq| {
                let key = format!("k{}", seq % KEYS);
                let value = serde_json::json!({ "k": key, "seq": seq }).to_string();
                let producer = producer.clone();
                let topic = topic.clone();
                async move {
                    producer
                        .send(
                            FutureRecord::to(&topic).key(&key).payload(&value),
                            Duration::from_secs(30),
                        )
                        .await
                        .map_err(|(e, _)| e)
                        .expect("produced");
                }
            })
            .collect();
        futures::future::join_all(sends).await;
    }

    /// Produces raw bytes to `in` (for poison records).
    pub async fn produce_raw(&self, key: &str, value: &[u8]) {
        self.produce_to("in", key, value).await;
    }

    /// Produces raw bytes to the topic `name` (prefixed).
    pub async fn produce_to(&self, name: &str, key: &str, value: &[u8]) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.endpoints.kafka_brokers)
            .create()
            .expect("producer");
        producer
            .send(
                FutureRecord::to(&self.topic(name)).key(key).payload(value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }

    /// Reads a topic from the beginning with `read_committed` until `expected` records arrived
    /// or nothing new came for `idle`.
    pub fn read(
        &self,
        name: &str,
        expected: usize,
        idle: Duration,
    ) -> Vec<(Option<String>, Option<Vec<u8>>)> {
        let topic = self.topic(name);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.endpoints.kafka_brokers)
            .set("group.id", unique("reader"))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let mut assignment = TopicPartitionList::new();
        for partition in metadata.topics()[0].partitions() {
            assignment
                .add_partition_offset(&topic, partition.id(), Offset::Beginning)
                .expect("offset");
        }
        consumer.assign(&assignment).expect("assign");
        let mut records = Vec::new();
        let mut last = Instant::now();
        while records.len() < expected && last.elapsed() < idle {
            if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                let message = message.expect("consume");
                records.push((
                    message
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    message.payload().map(<[u8]>::to_vec),
                ));
                last = Instant::now();
            }
        }
        records
    }

    /// Reads until `expected` records are there (failing after `timeout`), then once more briefly
    /// to catch any extra record.
    pub fn wait_for(
        &self,
        name: &str,
        expected: usize,
        timeout: Duration,
    ) -> Vec<(Option<String>, Option<Vec<u8>>)> {
        let deadline = Instant::now() + timeout;
        while self.read(name, expected, Duration::from_secs(2)).len() < expected {
            assert!(
                Instant::now() < deadline,
                "{name} did not get {expected} records within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        self.read(name, usize::MAX, Duration::from_secs(3))
    }

    /// The headers of the first record of `name`, as text.
    pub fn read_headers(&self, name: &str, timeout: Duration) -> Vec<(String, String)> {
        let topic = self.topic(name);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.endpoints.kafka_brokers)
            .set("group.id", unique("reader"))
            .set("isolation.level", "read_committed")
            .create()
            .expect("consumer");
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&topic, 0, Offset::Beginning)
            .expect("offset");
        consumer.assign(&assignment).expect("assign");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                let message = message.expect("consume");
                return clinic::streams::record::RawRecord::of(&message, "")
                    .headers
                    .into_iter()
                    .map(|(key, value)| (key, String::from_utf8_lossy(&value).into_owned()))
                    .collect();
            }
        }
        panic!("no record on {topic} within {timeout:?}");
    }

    /// Starts the counter processor as a child process.
    pub fn spawn(&self, guarantee: &str, instance: &str) -> Child {
        self.spawn_with(guarantee, instance, &[])
    }

    /// [`Fixture::spawn`], with more environment variables.
    pub fn spawn_with(&self, guarantee: &str, instance: &str, env: &[(&str, &str)]) -> Child {
        let mut command = Command::new(counter_binary());
        command.envs(env.iter().copied());
        if let Some(dir) = &self.state_dir {
            command.env("COUNTER_STATE_DIR", dir);
        }
        command
            .env("CLINIC_KAFKA_BROKERS", &self.endpoints.kafka_brokers)
            .env("COUNTER_PREFIX", &self.prefix)
            .env("COUNTER_GUARANTEE", guarantee)
            .env("COUNTER_INSTANCE", instance)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the counter example is built by cargo test")
    }
}

fn counter_binary() -> PathBuf {
    example_binary("counter_processor")
}

/// `target/<profile>/examples/<name>`, next to this test binary's `deps/`.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let binary = dir.join("examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: run through `cargo test`, which builds examples",
        binary.display()
    );
    binary
}

pub fn kill(child: &mut Child) {
    // SIGKILL: no chance to commit or flush.
    child.kill().expect("kill");
    child.wait().expect("reap");
}

pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the processor did not stop within 60 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Parsed outputs: per key, the `(seq, count)` pairs in the order they were written.
fn by_key(outputs: &[(Option<String>, Option<Vec<u8>>)]) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut keys: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for (_, value) in outputs {
        let value: serde_json::Value =
            serde_json::from_slice(value.as_deref().expect("a value")).expect("JSON");
        let key = value["k"].as_str().expect("k").to_owned();
        keys.entry(key).or_default().push((
            value["seq"].as_u64().expect("seq"),
            value["count"].as_u64().expect("count"),
        ));
    }
    keys
}

/// Runs the counter over `total` records, SIGKILLing it `kills` times at random moments, then
/// lets a last instance finish and stop with SIGTERM.
fn run_with_kills(fixture: &Fixture, guarantee: &str, total: usize, kills: usize) {
    let mut child = fixture.spawn(guarantee, "0");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(std::process::id());
    for _ in 0..kills {
        // xorshift: a random moment between 0.4 and 1.6 s after the (re)start.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(400 + seed % 1200));
        kill(&mut child);
        child = fixture.spawn(guarantee, "0");
    }
    // Let the last instance finish: wait for the outputs, then stop it gracefully.
    fixture.wait_for("out", total, Duration::from_secs(240));
    let status = terminate(&mut child);
    assert!(
        status.success(),
        "SIGTERM should end the processor with exit 0, got {status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_survives_repeated_sigkill_without_loss_or_duplicates() {
    let fixture = Fixture::new(PARTITIONS).await;
    let total = 50_000;
    fixture.produce(0, total).await;

    tokio::task::block_in_place(|| run_with_kills(&fixture, "exactly_once", total, 10));

    tokio::task::block_in_place(|| assert_exactly_once(&fixture, total));
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_with_the_store_on_disk_survives_sigkill_and_a_restart_replays_only_the_tail()
{
    let state = tempfile::tempdir().expect("a state directory");
    let mut fixture = Fixture::new(PARTITIONS).await;
    fixture.state_dir = Some(state.path().to_owned());
    let total = 20_000;
    fixture.produce(0, total).await;

    tokio::task::block_in_place(|| run_with_kills(&fixture, "exactly_once", total, 5));

    tokio::task::block_in_place(|| assert_exactly_once(&fixture, total));
    // A clean stop flushed the counts with their checkpoints: the next start reads nothing of
    // the changelog, and counts on from the disk's values.
    fixture.produce(total, 97).await;
    let restored = tokio::task::block_in_place(|| {
        let port = helpers::free_port();
        let mut child = Command::new(counter_binary())
            .env("COUNTER_STATE_DIR", state.path())
            .env("COUNTER_ADMIN_ADDR", format!("127.0.0.1:{port}"))
            .env("CLINIC_KAFKA_BROKERS", &fixture.endpoints.kafka_brokers)
            .env("COUNTER_PREFIX", &fixture.prefix)
            .env("COUNTER_INSTANCE", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the counter example is built by cargo test");
        fixture.wait_for("out", total + 97, Duration::from_secs(60));
        let metrics = helpers::http_get(&format!("http://127.0.0.1:{port}/metrics"));
        assert!(terminate(&mut child).success());
        metrics
    });
    let restored: f64 = restored
        .lines()
        .find_map(|l| l.strip_prefix("clinic_streams_restored_records_total "))
        .map_or(0.0, |v| v.trim().parse().expect("a number"));
    assert_eq!(
        restored, 0.0,
        "a restart after a clean stop replays nothing: {restored}"
    );
    let outputs =
        tokio::task::block_in_place(|| fixture.read("out", usize::MAX, Duration::from_secs(5)));
    let keys = by_key(&outputs);
    for (key, records) in &keys {
        let counts: Vec<u64> = records.iter().map(|(_, count)| *count).collect();
        let expected: Vec<u64> = (1..=records.len() as u64).collect();
        assert_eq!(counts, expected, "{key}: counted on from the disk");
    }
}

/// Every input has one output (read_committed), each key's counts run 1, 2, … with no gap or
/// repeat, and the changelog's latest values are the final counts.
fn assert_exactly_once(fixture: &Fixture, total: usize) {
    let outputs = fixture.read("out", usize::MAX, Duration::from_secs(5));
    assert_eq!(
        outputs.len(),
        total,
        "a read_committed reader sees each output exactly once"
    );
    let keys = by_key(&outputs);
    let seqs: BTreeSet<u64> = keys.values().flatten().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs.len(), total, "no input is missing or repeated");
    for (key, records) in &keys {
        let counts: Vec<u64> = records.iter().map(|(_, count)| *count).collect();
        let expected: Vec<u64> = (1..=records.len() as u64).collect();
        assert_eq!(
            counts, expected,
            "{key}: the store and the outputs moved together"
        );
    }
    // The store's changelog (read_committed, latest per key) holds the final counts.
    let changelog = fixture.read(
        "counter.counts.changelog",
        usize::MAX,
        Duration::from_secs(3),
    );
    let mut latest: BTreeMap<String, u64> = BTreeMap::new();
    for (key, value) in changelog {
        latest.insert(
            key.expect("key"),
            serde_json::from_slice(&value.expect("value")).expect("count"),
        );
    }
    let expected: BTreeMap<String, u64> = keys
        .iter()
        .map(|(k, r)| (k.clone(), r.len() as u64))
        .collect();
    assert_eq!(latest, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn at_least_once_survives_repeated_sigkill_without_loss() {
    let fixture = Fixture::new(PARTITIONS).await;
    let total = 50_000;
    fixture.produce(0, total).await;

    tokio::task::block_in_place(|| run_with_kills(&fixture, "at_least_once", total, 10));

    let outputs =
        tokio::task::block_in_place(|| fixture.read("out", usize::MAX, Duration::from_secs(5)));
    let seqs: BTreeSet<u64> = by_key(&outputs)
        .values()
        .flatten()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(
        seqs.len(),
        total,
        "every input produced an output at least once"
    );
    assert!(outputs.len() >= total);
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_records_go_to_the_dlq_and_the_partition_continues() {
    let fixture = Fixture::new(1).await;
    fixture.produce(0, 10).await;
    fixture.produce_raw("bad", b"{not json").await;
    fixture
        .produce_raw("neg", br#"{"k": "neg", "seq": -1}"#)
        .await;
    fixture.produce(10, 10).await;

    let dead = tokio::task::block_in_place(|| {
        let mut child = fixture.spawn("exactly_once", "0");
        let outputs = fixture.wait_for("out", 20, Duration::from_secs(60));
        assert_eq!(
            outputs.len(),
            20,
            "the records after the poison ones were processed"
        );
        let dead = fixture.wait_for("counter.dlq", 2, Duration::from_secs(30));
        assert!(terminate(&mut child).success());
        dead
    });

    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].0.as_deref(), Some("bad"));
    assert_eq!(dead[0].1.as_deref(), Some(&b"{not json"[..]));
    assert_eq!(dead[1].0.as_deref(), Some("neg"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_the_work_and_a_restarted_one_restores_its_state() {
    let fixture = Fixture::new(PARTITIONS).await;
    let first = 20_000;
    fixture.produce(0, first).await;

    tokio::task::block_in_place(|| {
        let mut a = fixture.spawn("exactly_once", "a");
        let mut b = fixture.spawn("exactly_once", "b");
        std::thread::sleep(Duration::from_millis(1500));
        assert!(terminate(&mut b).success());
        b = fixture.spawn("exactly_once", "b");
        let outputs = fixture.wait_for("out", first, Duration::from_secs(120));
        assert_eq!(outputs.len(), first);
        assert!(terminate(&mut a).success());
        assert!(terminate(&mut b).success());
    });
    // A second batch after both stopped: counts continue from the restored stores.
    fixture.produce(first, 1_000).await;
    let outputs = tokio::task::block_in_place(|| {
        // Both members again: static membership keeps each one's partitions for it.
        let mut a = fixture.spawn("exactly_once", "a");
        let mut b = fixture.spawn("exactly_once", "b");
        let outputs = fixture.wait_for("out", first + 1_000, Duration::from_secs(120));
        assert!(terminate(&mut a).success());
        assert!(terminate(&mut b).success());
        outputs
    });

    assert_eq!(outputs.len(), first + 1_000);
    for (key, records) in by_key(&outputs) {
        let counts: Vec<u64> = records.iter().map(|(_, count)| *count).collect();
        assert_eq!(
            counts,
            (1..=records.len() as u64).collect::<Vec<_>>(),
            "{key}"
        );
    }
}
