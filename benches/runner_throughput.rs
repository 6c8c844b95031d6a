//! Throughput and end-to-end latency of the streams runner against the local broker, for a
//! pass-through processor under exactly-once and at-least-once, next to a raw rdkafka
//! consume → produce loop over the same records (the ceiling). Prints figures and ratios;
//! asserts nothing. Needs the local stack (`scripts/stack up`).
//!
//! Run: `cargo bench --bench runner_throughput [-- <records>]` (default 100000).
//!
//! Throughput: `<records>` JSON records are produced to a 3-partition input first; the clock runs
//! from starting the processor to a `read_committed` reader having seen every output.
//! Latency: then 4,000 more records at 1,000/s, each carrying its send time; latency is the
//! reader's receive time minus the send time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clinic::endpoints::Endpoints;
use clinic::smoke::unique;
use clinic::streams::kafka::{Guarantee, Health, StreamsSettings};
use clinic::streams::runner;
use clinic::streams::{
    Context, Input, InputFormat, OutValue, OutputRecord, Payload, ProcessError, Processor, Topology,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;
const LATENCY_RECORDS: usize = 4_000;
const LATENCY_RATE: u64 = 1_000;

struct PassThrough;

impl Processor for PassThrough {
    fn topology(&self) -> Topology {
        Topology::new("passthrough")
            .stream("in", InputFormat::Json)
            .output("out")
    }

    fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let Payload::Json(Some(value)) = input.payload else {
            return Err(ProcessError::Poison("no value".into()));
        };
        let key = input
            .key
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        ctx.emit(OutputRecord {
            topic: "out".into(),
            key,
            value: Some(OutValue::Json(value)),
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Raw,
    AtLeastOnce,
    ExactlyOnce,
}

struct Figures {
    records_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

async fn create_topics(brokers: &str, prefix: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    let names: Vec<String> = ["in", "out", "passthrough.dlq"]
        .iter()
        .map(|t| format!("{prefix}{t}"))
        .collect();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .expect("create topics")
    {
        result.expect("topic created");
    }
}

async fn produce(brokers: &str, topic: &str, first: usize, count: usize, rate: Option<u64>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", if rate.is_some() { "0" } else { "5" })
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut sends = Vec::with_capacity(count);
    for seq in first..first + count {
        if let Some(rate) = rate {
            let due = started + Duration::from_micros((seq - first) as u64 * 1_000_000 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let key = format!("k{}", seq % 101);
        let value = serde_json::json!({ "k": key, "seq": seq, "t": now_micros() }).to_string();
        let producer = producer.clone();
        let topic = topic.to_owned();
        sends.push(tokio::spawn(async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("produced");
        }));
    }
    for send in sends {
        send.await.expect("send task");
    }
}

/// Reads `topic` (read_committed) from `start` until `count` records, returning when the last
/// arrived and each record's latency (receive time minus its `t`).
fn read(brokers: &str, topic: &str, start: &[i64], count: usize) -> (Instant, Vec<f64>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("bench-reader"))
        .set("isolation.level", "read_committed")
        // Return fetched data as soon as it is readable instead of after up to 500 ms.
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(start[partition as usize]))
            .expect("offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut seen = 0;
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < count {
        assert!(
            Instant::now() < deadline,
            "outputs stopped arriving ({seen} of {count})"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume");
            let received = now_micros();
            seen += 1;
            if let Some(sent) = message
                .payload()
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                .and_then(|v| v["t"].as_u64())
            {
                latencies.push(received.saturating_sub(sent) as f64 / 1000.0);
            }
        }
    }
    (Instant::now(), latencies)
}

fn end_offsets(brokers: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}

/// The ceiling: consume → produce with nothing in between, offsets auto-committed.
fn raw_loop(brokers: String, prefix: String, stop: Arc<AtomicBool>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("{prefix}raw"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[&format!("{prefix}in")])
        .expect("subscribe");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let out = format!("{prefix}out");
    while !stop.load(Ordering::SeqCst) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) {
            let mut record = BaseRecord::<[u8], [u8]>::to(&out);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            while let Err((_, back)) = producer.send(record) {
                producer.poll(Duration::from_millis(5));
                record = back;
            }
        }
        producer.poll(Duration::ZERO);
    }
    let _ = producer.flush(Duration::from_secs(10));
}

async fn measure(endpoints: &Endpoints, mode: Mode, records: usize) -> Figures {
    let prefix = format!("{}.", unique("bench"));
    let brokers = endpoints.kafka_brokers.clone();
    create_topics(&brokers, &prefix).await;
    produce(&brokers, &format!("{prefix}in"), 0, records, None).await;

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let worker = match mode {
        Mode::Raw => {
            let (brokers, prefix, stop) = (brokers.clone(), prefix.clone(), Arc::clone(&stop));
            tokio::task::spawn_blocking(move || {
                raw_loop(brokers, prefix, stop);
                Ok(())
            })
        }
        Mode::AtLeastOnce | Mode::ExactlyOnce => {
            let config = StreamsSettings {
                brokers: brokers.clone(),
                topic_prefix: prefix.clone(),
                guarantee: if matches!(mode, Mode::ExactlyOnce) {
                    Guarantee::ExactlyOnce
                } else {
                    Guarantee::AtLeastOnce
                },
                admin_addr: None,
                librdkafka: std::env::var("BENCH_RDKAFKA_DEBUG")
                    .map(|d| [("debug".to_owned(), d)].into())
                    .unwrap_or_default(),
                ..StreamsSettings::default()
            };
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                runner::run_until(config, || PassThrough, stop, Arc::new(Health::default())).await
            })
        }
    };
    let out = format!("{prefix}out");
    let (done, _) = {
        let (brokers, out) = (brokers.clone(), out.clone());
        tokio::task::spawn_blocking(move || {
            read(&brokers, &out, &[0; PARTITIONS as usize], records)
        })
        .await
        .expect("reader")
    };
    let records_per_second = records as f64 / (done - started).as_secs_f64();

    // Latency: a reader that starts at the end, so the backlog does not count.
    let ends = end_offsets(&brokers, &out);
    let reader = {
        let (brokers, out) = (brokers.clone(), out.clone());
        tokio::task::spawn_blocking(move || read(&brokers, &out, &ends, LATENCY_RECORDS))
    };
    produce(
        &brokers,
        &format!("{prefix}in"),
        records,
        LATENCY_RECORDS,
        Some(LATENCY_RATE),
    )
    .await;
    let (_, latencies) = reader.await.expect("reader");
    stop.store(true, Ordering::SeqCst);
    worker
        .await
        .expect("worker joined")
        .expect("worker stopped cleanly");

    let mut live = latencies;
    live.sort_by(f64::total_cmp);
    let at = |q: f64| live[((live.len() as f64 - 1.0) * q).round() as usize];
    Figures {
        records_per_second,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    }
}

#[tokio::main]
async fn main() {
    clinic::telemetry::init();
    let records: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let endpoints = Endpoints::from_env().expect("endpoints");
    println!(
        "runner_throughput: {records} records, {PARTITIONS} partitions, JSON ~60 B, local single broker"
    );
    let mut results = Vec::new();
    let modes = match std::env::var("BENCH_MODES").as_deref() {
        Ok("eos") => vec![Mode::ExactlyOnce],
        _ => vec![Mode::Raw, Mode::AtLeastOnce, Mode::ExactlyOnce],
    };
    for mode in modes {
        let figures = measure(&endpoints, mode, records).await;
        println!(
            "  {:<14} {:>9.0} records/s   e2e p50 {:>7.1} ms   p99 {:>7.1} ms",
            format!("{mode:?}"),
            figures.records_per_second,
            figures.p50_ms,
            figures.p99_ms
        );
        results.push(figures);
    }
    let ceiling = results[0].records_per_second;
    println!(
        "  ratio to the raw loop: at-least-once {:.0}%, exactly-once {:.0}%",
        100.0 * results[1].records_per_second / ceiling,
        100.0 * results[2].records_per_second / ceiling
    );
}
