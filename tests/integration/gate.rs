//! `Topology::stream_after_others` on the real broker: a trigger record produced after a
//! backlog of other-input records, in another topic the consumer may fetch first, acts only on
//! state built from the whole backlog, also when that backlog was written in transactions
//! (their commit markers occupy offsets no record is returned for); and, with two instances and
//! repartition topics, when the backlog is in a partition the other instance reads and routes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clinic::endpoints::Endpoints;
use clinic::streams::kafka::Health;
use clinic::streams::runner;
use clinic::streams::{
    Context, Input, InputFormat, OutValue, OutputRecord, Payload, ProcessError, Processor, Topology,
};
use clinic::testkit;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

const FACTS: usize = 3_000;

/// Counts facts in a store; a trigger emits the count it sees.
struct Counter;

impl Processor for Counter {
    fn topology(&self) -> Topology {
        Topology::new("gated")
            .stream("facts", InputFormat::Json)
            .stream_after_others("triggers", InputFormat::Json)
            .store("count")
            .output("seen")
    }

    fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let count: u64 = ctx.get_json("count", "n")?.unwrap_or(0);
        match (input.topic, input.payload) {
            ("facts", _) => ctx.put_json("count", "n", &(count + 1)),
            ("triggers", Payload::Json(_)) => ctx.emit(OutputRecord {
                topic: "seen".into(),
                key: "n".into(),
                value: Some(OutValue::Json(serde_json::json!(count))),
            }),
            (other, _) => Err(ProcessError::Fatal(format!("BUG: input {other}"))),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_waits_until_the_transactional_backlog_of_the_other_input_is_processed() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let prefix = format!("{}.", testkit::unique("gate"));
    // One partition everywhere: the counter is one store.
    testkit::create_topics(
        &endpoints,
        &prefix,
        &[
            ("facts", 1),
            ("triggers", 1),
            ("seen", 1),
            ("gated.dlq", 1),
            ("gated.count.changelog", 1),
        ],
    )
    .await
    .expect("topics");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &endpoints.kafka_brokers)
        .set("transactional.id", testkit::unique("gate-producer"))
        .create()
        .expect("producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init");
    let facts = format!("{prefix}facts");
    for chunk in 0..FACTS / 500 {
        producer.begin_transaction().expect("begin");
        for n in 0..500 {
            let value = format!("{{\"fact\":{}}}", chunk * 500 + n);
            producer
                .send(BaseRecord::<str, str>::to(&facts).key("f").payload(&value))
                .map_err(|(e, _)| e)
                .expect("queue");
        }
        producer
            .commit_transaction(Duration::from_secs(30))
            .expect("commit");
    }
    producer.begin_transaction().expect("begin");
    producer
        .send(
            BaseRecord::<str, str>::to(&format!("{prefix}triggers"))
                .key("t")
                .payload("{}"),
        )
        .map_err(|(e, _)| e)
        .expect("queue");
    producer
        .commit_transaction(Duration::from_secs(30))
        .expect("commit");

    let shutdown = Arc::new(AtomicBool::new(false));
    let config = testkit::runner_config(&endpoints, &prefix);
    let running = tokio::spawn(runner::run_until(
        config,
        || Counter,
        Arc::clone(&shutdown),
        Arc::new(Health::default()),
    ));
    let seen = format!("{prefix}seen");
    let brokers = endpoints.kafka_brokers.clone();
    let count = tokio::task::spawn_blocking(move || first_count(&brokers, &seen))
        .await
        .expect("reader");
    shutdown.store(true, Ordering::SeqCst);
    running
        .await
        .expect("joined")
        .expect("the runner stops cleanly");

    assert_eq!(count, Some(FACTS as u64), "the trigger saw a partial count");
}

/// Forwards facts and asks through repartition topics (as deletions routes its inputs): every
/// fact to the task holding the count (one key), every ask to every task; the task holding the
/// count answers an ask with it.
struct Router;

impl Processor for Router {
    fn topology(&self) -> Topology {
        Topology::new("router")
            .stream("facts", InputFormat::Json)
            .stream_after_others("asks", InputFormat::Json)
            .repartition("counted")
            .repartition("asked")
            .stream("counted", InputFormat::Json)
            .stream_after_others("asked", InputFormat::Json)
            .store("count")
            .output("seen")
    }

    fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let one = |topic: &str| OutputRecord {
            topic: topic.into(),
            key: "all".into(),
            value: Some(OutValue::Json(serde_json::json!(1))),
        };
        match input.topic {
            "facts" => ctx.emit(one("counted")),
            "asks" => ctx.broadcast(one("asked")),
            "counted" => {
                let count: u64 = ctx.get_json("count", "n")?.unwrap_or(0);
                ctx.put_json("count", "n", &(count + 1))
            }
            "asked" => match ctx.get_json::<u64>("count", "n")? {
                Some(count) => ctx.emit(OutputRecord {
                    topic: "seen".into(),
                    key: "n".into(),
                    value: Some(OutValue::Json(serde_json::json!(count))),
                }),
                None => Ok(()),
            },
            other => Err(ProcessError::Fatal(format!("BUG: input {other}"))),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ask_waits_for_the_backlog_another_instance_reads_and_routes() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let prefix = format!("{}.", testkit::unique("gate2"));
    let topology = Router.topology();
    let mut topics: Vec<(String, i32)> = testkit::topics_of(&topology)
        .into_iter()
        .map(|t| {
            let partitions = if t.ends_with(".dlq") || t == "seen" {
                1
            } else {
                2
            };
            (t, partitions)
        })
        .collect();
    topics.dedup();
    let topics: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    testkit::create_topics(&endpoints, &prefix, &topics)
        .await
        .expect("topics");
    let shutdown = Arc::new(AtomicBool::new(false));
    let instances: Vec<_> = ["x", "y"]
        .into_iter()
        .map(|id| {
            let config = clinic::streams::kafka::StreamsSettings {
                instance_id: id.to_owned(),
                ..testkit::runner_config(&endpoints, &prefix)
            };
            tokio::spawn(runner::run_until(
                config,
                || Router,
                Arc::clone(&shutdown),
                Arc::new(Health::default()),
            ))
        })
        .collect();
    // Both members in the group: one reads facts[1], the other asks[0].
    let brokers = endpoints.kafka_brokers.clone();
    let group = format!("{prefix}{}", topology.group_id());
    tokio::task::spawn_blocking(move || await_members(&brokers, &group, 2))
        .await
        .expect("the group formed");

    // A backlog in facts[1] (one transaction: it ends in a commit marker the group never commits
    // past), then at once an ask in asks[0]: the instance holding the ask must wait until the
    // other has read and routed the whole backlog.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &endpoints.kafka_brokers)
        .set("transactional.id", testkit::unique("gate2-producer"))
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init");
    producer.begin_transaction().expect("begin");
    let facts = format!("{prefix}facts");
    for n in 0..FACTS * 10 {
        let value = format!("{{\"fact\":{n}}}");
        testkit::send_waiting(
            &producer,
            BaseRecord::<str, str>::to(&facts)
                .partition(1)
                .key("f")
                .payload(&value),
        );
    }
    // Committed before the ask, whose arrival sets how far the backlog must be read.
    producer
        .commit_transaction(Duration::from_secs(60))
        .expect("commit");
    producer.begin_transaction().expect("begin");
    testkit::send_waiting(
        &producer,
        BaseRecord::<str, str>::to(&format!("{prefix}asks"))
            .partition(0)
            .key("a")
            .payload("{}"),
    );
    producer
        .commit_transaction(Duration::from_secs(30))
        .expect("commit");

    let seen = format!("{prefix}seen");
    let brokers = endpoints.kafka_brokers.clone();
    let count = tokio::task::spawn_blocking(move || first_count(&brokers, &seen))
        .await
        .expect("reader");
    shutdown.store(true, Ordering::SeqCst);
    for running in instances {
        running
            .await
            .expect("joined")
            .expect("the runner stops cleanly");
    }
    assert_eq!(
        count,
        Some((FACTS * 10) as u64),
        "the ask saw a partial count"
    );
}

/// Waits until `group` is stable with `members` members.
fn await_members(brokers: &str, group: &str, members: usize) {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", testkit::unique("gate-probe"))
        .create()
        .expect("probe");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let groups = probe
            .fetch_group_list(Some(group), Duration::from_secs(10))
            .expect("groups");
        if groups
            .groups()
            .iter()
            .any(|g| g.state() == "Stable" && g.members().len() == members)
        {
            return;
        }
        assert!(Instant::now() < deadline, "the group did not form");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first count committed to `topic`.
fn first_count(brokers: &str, topic: &str) -> Option<u64> {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", testkit::unique("gate-reader"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .expect("reader");
    reader.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if let Some(message) = reader.poll(Duration::from_millis(200)) {
            let message = message.expect("read");
            return message
                .payload()
                .and_then(|p| serde_json::from_slice::<u64>(p).ok());
        }
    }
    None
}
