//! `Topology::stream_after_others` on the real broker: a trigger record produced after a
//! backlog of other-input records, in another topic the consumer may fetch first, acts only on
//! state built from the whole backlog, also when that backlog was written in transactions
//! (their commit markers occupy offsets no record is returned for).

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
    let count = tokio::task::spawn_blocking(move || {
        let reader: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", testkit::unique("gate-reader"))
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create()
            .expect("reader");
        reader.subscribe(&[&seen]).expect("subscribe");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(message) = reader.poll(Duration::from_millis(200)) {
                let message = message.expect("read");
                return message
                    .payload()
                    .and_then(|p| serde_json::from_slice::<u64>(p).ok());
            }
        }
        None
    })
    .await
    .expect("reader");
    shutdown.store(true, Ordering::SeqCst);
    running
        .await
        .expect("joined")
        .expect("the runner stops cleanly");

    assert_eq!(count, Some(FACTS as u64), "the trigger saw a partial count");
}
