//! Global tables on the real broker (`Topology::global`): two instances each read the whole
//! table topic before their tasks start and keep it current; a stream record whose lookup is not
//! in the table yet waits in its task and is answered when the table's change arrives; one that
//! waited across a restart is answered by the restarted task (`Processor::resumed`). Every
//! question is answered exactly once.

use std::collections::BTreeMap;
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
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use tokio::task::JoinHandle;

const NAMES: &str = "names";
const ASKS: &str = "asks";
const GREETINGS: &str = "greetings";
const WAITING: &str = "waiting";

/// Greets each ask `{"name": n}` with the name's entry of the global table `names`
/// (`{"name": n, "text": t}` records); an ask whose name is not there yet waits for it.
struct Greeter;

impl Greeter {
    fn greet(
        ctx: &mut Context<'_>,
        ask: &str,
        name: &str,
        waited: bool,
    ) -> Result<(), ProcessError> {
        let Some(text) = ctx.get_json::<String>(NAMES, name)? else {
            return ctx.put_json(WAITING, &format!("{name}|{ask}"), &());
        };
        ctx.emit(OutputRecord {
            topic: GREETINGS.into(),
            key: ask.to_owned(),
            value: Some(OutValue::Json(
                serde_json::json!({ "text": text, "waited": waited }),
            )),
        })
    }

    fn release(ctx: &mut Context<'_>, prefix: &str) -> Result<(), ProcessError> {
        for (key, _) in ctx.scan_prefix(WAITING, prefix)? {
            let (name, ask) = key.split_once('|').expect("name|ask");
            if ctx.get(NAMES, name)?.is_some() {
                ctx.delete(WAITING, &key)?;
                Self::greet(ctx, ask, name, true)?;
            }
        }
        Ok(())
    }
}

fn field(input: &Input<'_>, payload: &Payload, name: &str) -> Result<String, ProcessError> {
    match payload {
        Payload::Json(Some(value)) => value[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ProcessError::Poison(format!("{} without {name}", input.topic))),
        _ => Err(ProcessError::Poison("not JSON".into())),
    }
}

impl Processor for Greeter {
    fn topology(&self) -> Topology {
        Topology::new("greeter")
            .global(NAMES, InputFormat::Json, NAMES)
            .stream(ASKS, InputFormat::Json)
            .store(WAITING)
            .output(GREETINGS)
    }

    fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let name = field(&input, &input.payload, "name")?;
        let ask = String::from_utf8_lossy(input.key.unwrap_or_default()).into_owned();
        Self::greet(ctx, &ask, &name, false)
    }

    fn process_global(&self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let name = field(&input, &input.payload, "name")?;
        let text = field(&input, &input.payload, "text")?;
        ctx.put_json(NAMES, &name, &text)
    }

    fn global_changed(
        &mut self,
        _store: &str,
        key: &str,
        ctx: &mut Context<'_>,
    ) -> Result<(), ProcessError> {
        Self::release(ctx, &format!("{key}|"))
    }

    fn resumed(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        Self::release(ctx, "")
    }
}

struct Instance {
    shutdown: Arc<AtomicBool>,
    running: JoinHandle<anyhow::Result<()>>,
}

impl Drop for Instance {
    /// A failing test stops its runners too (the runtime waits for their threads).
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }
}

impl Instance {
    fn start(endpoints: &Endpoints, prefix: &str, id: &str) -> Self {
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut config = testkit::runner_config(endpoints, prefix);
        config.instance_id = id.to_owned();
        let running = tokio::spawn(runner::run_until(
            config,
            || Greeter,
            Arc::clone(&shutdown),
            Arc::new(Health::default()),
        ));
        Self { shutdown, running }
    }

    async fn stop(mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        (&mut self.running)
            .await
            .expect("joined")
            .expect("the runner stops cleanly");
    }
}

fn produce(brokers: &str, topic: &str, records: &[(String, serde_json::Value)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    for (key, value) in records {
        let value = value.to_string();
        producer
            .send(BaseRecord::to(topic).key(key).payload(&value))
            .map_err(|(e, _)| e)
            .expect("queued");
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("flushed");
}

fn names(range: std::ops::Range<usize>, prefix: &str) -> Vec<(String, serde_json::Value)> {
    range
        .map(|i| {
            let name = format!("{prefix}{i}");
            (
                name.clone(),
                serde_json::json!({ "name": name, "text": format!("Hello {name}") }),
            )
        })
        .collect()
}

fn asks(range: std::ops::Range<usize>, prefix: &str) -> Vec<(String, serde_json::Value)> {
    range
        .map(|i| {
            (
                format!("ask-{prefix}{i}"),
                serde_json::json!({ "name": format!("{prefix}{i}") }),
            )
        })
        .collect()
}

/// The greetings so far, by ask: (text, waited) for each time it was answered.
fn greetings(brokers: &str, topic: &str) -> BTreeMap<String, Vec<(String, bool)>> {
    let mut by_ask: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for message in testkit::read_topic(brokers, topic) {
        let key = String::from_utf8_lossy(message.key().expect("a key")).into_owned();
        let value: serde_json::Value =
            serde_json::from_slice(message.payload().expect("a value")).expect("JSON");
        by_ask.entry(key).or_default().push((
            value["text"].as_str().expect("text").to_owned(),
            value["waited"].as_bool().expect("waited"),
        ));
    }
    by_ask
}

async fn await_greetings(
    brokers: &str,
    topic: &str,
    count: usize,
) -> BTreeMap<String, Vec<(String, bool)>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
        let seen = tokio::task::spawn_blocking(move || greetings(&brokers, &topic))
            .await
            .expect("read");
        if seen.len() >= count {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} asks answered",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the group committed past every record of `topic`.
async fn consumed(brokers: &str, group: &str, topic: &str) {
    let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        testkit::await_consumed(&brokers, &group, &topic, Duration::from_secs(60));
    })
    .await
    .expect("consumed");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_read_the_global_table_whole_and_answer_each_ask_once_across_a_restart() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let brokers = endpoints.kafka_brokers.clone();
    let prefix = format!("{}.", testkit::unique("global"));
    // The table has its own partition count: it is read whole, never co-partitioned.
    testkit::create_topics(
        &endpoints,
        &prefix,
        &[
            (NAMES, 3),
            (ASKS, 2),
            (GREETINGS, 2),
            ("greeter.dlq", 1),
            ("greeter.waiting.changelog", 2),
        ],
    )
    .await
    .expect("topics");
    let (names_topic, asks_topic, out) = (
        format!("{prefix}{NAMES}"),
        format!("{prefix}{ASKS}"),
        format!("{prefix}{GREETINGS}"),
    );
    // Before either instance starts: every name is read before any ask is handled, so none of
    // these asks waits.
    produce(&brokers, &names_topic, &names(0..300, "n"));
    produce(&brokers, &asks_topic, &asks(0..300, "n"));
    let a = Instance::start(&endpoints, &prefix, "a");
    let b = Instance::start(&endpoints, &prefix, "b");
    let seen = await_greetings(&brokers, &out, 300).await;
    assert!(
        seen.values()
            .all(|answers| answers.iter().all(|(_, waited)| !waited)),
        "an ask waited although its name was in the table before the task started"
    );

    // Asks for names nobody has yet: they wait, each in the task that read it, until the
    // table's change reaches every task.
    produce(&brokers, &asks_topic, &asks(0..50, "m"));
    let group = format!("{prefix}clinic-greeter");
    consumed(&brokers, &group, &asks_topic).await;
    produce(&brokers, &names_topic, &names(0..25, "m"));
    await_greetings(&brokers, &out, 325).await;

    // Both stop; the other names arrive meanwhile; the restarted instance's tasks answer what
    // waited for them as they resume.
    a.stop().await;
    b.stop().await;
    produce(&brokers, &names_topic, &names(25..50, "m"));
    let a = Instance::start(&endpoints, &prefix, "a");
    await_greetings(&brokers, &out, 350).await;
    consumed(&brokers, &group, &asks_topic).await;
    a.stop().await;
    let seen = {
        let brokers = brokers.clone();
        tokio::task::spawn_blocking(move || greetings(&brokers, &out))
            .await
            .expect("read")
    };

    assert_eq!(seen.len(), 350);
    let repeated: Vec<&String> = seen
        .iter()
        .filter(|(_, answers)| answers.len() != 1)
        .map(|(ask, _)| ask)
        .collect();
    assert!(repeated.is_empty(), "answered more than once: {repeated:?}");
    for i in 0..50 {
        let answer = &seen[&format!("ask-m{i}")][0];
        assert_eq!(answer, &(format!("Hello m{i}"), true), "ask-m{i}");
    }
    assert_eq!(seen["ask-n7"][0], ("Hello n7".to_owned(), false));
}
