//! How long a restarted processor takes to be ready when its stores must be restored from their
//! changelogs, and its RSS then. Prints figures; asserts nothing. Needs the local stack.
//!
//! Run: `cargo bench --bench restore [-- <entries per partition>...]` (default: 1000 and
//! 166667, i.e. 6,000 and 1,000,002 entries over 6 partitions).
//!
//! Per size: a one-store processor's changelog (6 partitions, ~90-byte JSON values) is filled
//! directly, then the runner is started as a restarted instance would be, and the clock runs
//! from its start to `/readyz` saying ready (group joined, every store restored). RSS is the
//! bench process's (the runner runs in it) at that moment, less what it was before the start.
//! Then the same for the deletions processor over `RESTORE_DELETIONS` (100,000) patient
//! documents, whose indexes the runtime rebuilds as they restore.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clinic::endpoints::Endpoints;
use clinic::streams::kafka::Health;
use clinic::streams::runner;
use clinic::streams::{Context, Input, InputFormat, ProcessError, Processor, Topology};
use clinic::testkit;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

const PARTITIONS: i32 = 6;

/// Keeps each input record under its key.
struct Keeper;

impl Processor for Keeper {
    fn topology(&self) -> Topology {
        Topology::new("restorebench")
            .stream("in", InputFormat::Json)
            .store("kv")
    }

    fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let key = String::from_utf8_lossy(input.key.unwrap_or_default()).into_owned();
        ctx.write_raw("kv", &key, b"{}".to_vec())
    }
}

/// Writes `per_partition` records `record(partition, i)` (key, value) to each of the first
/// `partitions` partitions of `topic`.
fn fill(
    brokers: &str,
    topic: &str,
    partitions: i32,
    per_partition: usize,
    record: impl Fn(i32, usize) -> (Vec<u8>, Vec<u8>),
) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    for partition in 0..partitions {
        for i in 0..per_partition {
            let (key, value) = record(partition, i);
            let record = BaseRecord::to(topic)
                .key(&key)
                .payload(&value)
                .partition(partition);
            testkit::send_waiting(&producer, record);
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flushed");
}

/// The runner started over the topics under `prefix` as a restarted instance would be: the time
/// from its start to ready, and the process's RSS before and then (MiB).
async fn until_ready<P, F>(endpoints: &Endpoints, prefix: &str, factory: F) -> (Duration, f64, f64)
where
    P: Processor + 'static,
    F: Fn() -> P + Send + 'static,
{
    let rss_before = testkit::rss_mib();
    let shutdown = Arc::new(AtomicBool::new(false));
    let health = Arc::new(Health::default());
    let started = Instant::now();
    let running = tokio::spawn(runner::run_until(
        testkit::runner_config(endpoints, prefix),
        factory,
        Arc::clone(&shutdown),
        Arc::clone(&health),
    ));
    while !health.ready.load(Ordering::SeqCst) {
        assert!(
            !running.is_finished(),
            "the runner stopped before it was ready"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = started.elapsed();
    let rss = testkit::rss_mib();
    shutdown.store(true, Ordering::SeqCst);
    running
        .await
        .expect("joined")
        .expect("the runner stops cleanly");
    (ready, rss_before, rss)
}

async fn run(endpoints: &Endpoints, per_partition: usize) {
    let prefix = format!("{}.", testkit::unique("restore"));
    testkit::create_topics(
        endpoints,
        &prefix,
        &[
            ("in", PARTITIONS),
            ("restorebench.dlq", 1),
            ("restorebench.kv.changelog", PARTITIONS),
        ],
    )
    .await
    .expect("topics");
    let changelog = format!("{prefix}restorebench.kv.changelog");
    let filling = Instant::now();
    {
        let brokers = endpoints.kafka_brokers.clone();
        tokio::task::spawn_blocking(move || {
            fill(&brokers, &changelog, PARTITIONS, per_partition, |partition, i| {
                let key =
                    format!("{{\"_id\":{{\"$oid\":\"65a1b2c3d4e5f6a7{partition:02x}{i:06x}\"}}}}");
                let value = format!(
                    "{{\"clinic\":\"65a1b2c3d4e5f6a7b8c9d0e1\",\"user\":\"{i:010x}\",\"n\":{i}}}"
                );
                (key.into_bytes(), value.into_bytes())
            });
        })
        .await
        .expect("filled");
    }
    let filled = filling.elapsed();
    let (ready, rss_before, rss) = until_ready(endpoints, &prefix, || Keeper).await;
    let entries = per_partition * PARTITIONS as usize;
    println!(
        "{entries:>9} entries ({PARTITIONS} partitions × {per_partition}): ready in {:.2} s \
         ({:.0} entries/s), RSS {rss:.0} MiB (+{:.0} MiB over {rss_before:.0}); filling took {:.1} s",
        ready.as_secs_f64(),
        entries as f64 / ready.as_secs_f64(),
        rss - rss_before,
        filled.as_secs_f64(),
    );
}

/// The deletions processor restarted over `documents` patient documents in its changelog (as
/// the processors benchmark's, stored as it stores them): its four indexes are rebuilt from
/// them while they restore.
async fn deletions(endpoints: &Endpoints, documents: usize) {
    use bson::oid::ObjectId;
    use clinic::streams::store::table_key;
    use clinic::streams::stored::document_value;
    use clinic_deletions::processor::Deletions;

    let prefix = format!("{}.", testkit::unique("restore"));
    let topology = Deletions::new(Default::default()).topology();
    let topics = testkit::topics_of(&topology);
    let topics: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), 1)).collect();
    testkit::create_topics(endpoints, &prefix, &topics)
        .await
        .expect("topics");
    let changelog = format!(
        "{prefix}{}",
        topology.changelog_topic(clinic_deletions::processor::PATIENT_STORE)
    );
    {
        let brokers = endpoints.kafka_brokers.clone();
        let clinics: Vec<ObjectId> = (0..40).map(|_| ObjectId::new()).collect();
        tokio::task::spawn_blocking(move || {
            fill(&brokers, &changelog, 1, documents, |_, n| {
                let document = testkit::bench_patient(n, clinics[n % clinics.len()]);
                let key = table_key(document.get("_id").expect("an _id"));
                let value = document_value(&key, &document);
                (key.into_bytes(), value)
            });
        })
        .await
        .expect("filled");
    }
    let (ready, rss_before, rss) =
        until_ready(endpoints, &prefix, || Deletions::new(Default::default())).await;
    println!(
        "deletions, {documents} patient documents (their indexes rebuilt): ready in {:.2} s \
         ({:.0} documents/s), RSS {rss:.0} MiB (+{:.0} MiB over {rss_before:.0})",
        ready.as_secs_f64(),
        documents as f64 / ready.as_secs_f64(),
        rss - rss_before,
    );
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 166_667]
    } else {
        sizes
    };
    let endpoints = Endpoints::from_env().expect("endpoints");
    for per_partition in sizes {
        run(&endpoints, per_partition).await;
    }
    let documents = std::env::var("RESTORE_DELETIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    deletions(&endpoints, documents).await;
}
