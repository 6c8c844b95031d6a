//! Events per second of each processor against the local broker (Avro in, each processor's own
//! output format, exactly-once, as deployed), next to the runtime's Avro pass-through, and the process's memory (RSS) once
//! `<records>` patients are in the stores. Prints figures; asserts nothing. Needs the local stack.
//!
//! Run on one core: `taskset -c 1 cargo bench --bench processors [-- <records>]` (default
//! 100000). `<records>` patient inserts (the source connector's Avro change events, ~300 B) are
//! produced to a 3-partition `clinic.patients` first; the clock runs from starting the processor
//! until its group's committed offsets reach the end of the input (deletions emits nothing for
//! inserts, so outputs cannot be the clock). RSS is read from `/proc/self/status` just before the
//! runner starts and again once it is done, while its stores are full; CPU per event is the
//! process's user and system time over the same span (`/proc/self/stat`), divided by the events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use apache_avro::types::Value as Avro;
use bson::oid::ObjectId;
use bson::{DateTime, doc};
use clinic::cdc::{ChangeEvent, Encoding, Envelope, Format, Operation};
use clinic::endpoints::Endpoints;
use clinic::streams::runner::{self, Health};
use clinic::streams::{
    Context, Input, InputFormat, OutValue, OutputRecord, Payload, ProcessError, Processor, Topology,
};
use clinic::testkit;

const PARTITIONS: i32 = 3;
const OUT_SCHEMA: &str = r#"{"type":"record","name":"Out","namespace":"bench","fields":[{"name":"id","type":"string"}]}"#;

/// Decodes each CDC event and emits a one-field Avro record: the runtime's own cost.
struct PassThrough {
    schema: Arc<str>,
}

impl Processor for PassThrough {
    fn topology(&self) -> Topology {
        Topology::new("passthrough")
            .stream("clinic.patients", InputFormat::Cdc(avro_source()))
            .output("out")
    }

    fn process(&mut self, input: Input<'_>, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let Payload::Cdc(record) = input.payload else {
            return Err(ProcessError::Fatal("BUG: CDC input".into()));
        };
        let key = match &record {
            clinic::cdc::CdcRecord::Change(event) => &event.document_key,
            clinic::cdc::CdcRecord::Tombstone { document_key } => document_key,
        };
        let id = key.to_string();
        ctx.emit(OutputRecord {
            topic: "out".into(),
            key: id.clone(),
            value: Some(OutValue::Avro {
                schema: Arc::clone(&self.schema),
                value: Avro::Record(vec![("id".into(), Avro::String(id))]),
            }),
        })
    }
}

fn avro_source() -> Format {
    Format {
        envelope: Envelope::MongoChangeStream,
        encoding: Encoding::Avro,
    }
}

/// `records` patient inserts spread over 40 clinics, a realistic document each.
fn patients(records: usize) -> Vec<(&'static str, ChangeEvent)> {
    let clinics: Vec<ObjectId> = (0..40).map(|_| ObjectId::new()).collect();
    (0..records)
        .map(|n| {
            let id = ObjectId::new();
            let document = doc! {
                "_id": id, "clinicId": clinics[n % clinics.len()], "userId": format!("user{n:08}"),
                "fullName": format!("Patient Number {n}"), "birthDate": "1990-04-05",
                "email": format!("patient{n}@example.org"), "mrn": format!("MRN{n}"),
                "permissions": { "view": {}, "upload": {} }, "tags": [ObjectId::new()],
                "createdTime": DateTime::from_millis(1_700_000_000_000 + n as i64),
                "updatedTime": DateTime::from_millis(1_700_000_000_000 + n as i64),
            };
            let event = testkit::change(Operation::Insert, "patients", id, Some(document));
            ("clinic.patients", event)
        })
        .collect()
}

async fn measure<P, F>(endpoints: &Endpoints, records: usize, factory: F) -> (f64, f64, f64, f64)
where
    P: Processor + 'static,
    F: Fn() -> P + Send + Clone + 'static,
{
    let topology = factory().topology();
    let prefix = format!("{}.", testkit::unique("bench"));
    let changelog_partitions = if topology.single_task { 1 } else { PARTITIONS };
    let mut topics: Vec<(String, i32)> = topology
        .inputs
        .iter()
        .map(|i| (i.topic.clone(), PARTITIONS))
        .collect();
    topics.extend(topology.outputs.iter().map(|t| (t.clone(), PARTITIONS)));
    topics.push((topology.dlq_topic(), 1));
    topics.extend(
        topology
            .stores
            .iter()
            .map(|s| (topology.changelog_topic(s), changelog_partitions)),
    );
    let topics: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    testkit::create_topics(endpoints, &prefix, &topics)
        .await
        .expect("topics");
    testkit::publish_changes(endpoints, &prefix, &patients(records))
        .await
        .expect("publish");

    let before = testkit::rss_mib();
    let cpu_before = cpu_seconds();
    let stop = Arc::new(AtomicBool::new(false));
    let config = testkit::runner_config(endpoints, &prefix);
    let started = Instant::now();
    let running = tokio::spawn(runner::run_until(
        config,
        factory,
        Arc::clone(&stop),
        Arc::new(Health::default()),
    ));
    let (brokers, group, input) = (
        endpoints.kafka_brokers.clone(),
        format!("{prefix}{}", topology.group_id()),
        format!("{prefix}clinic.patients"),
    );
    tokio::task::spawn_blocking(move || {
        testkit::await_committed(&brokers, &group, &[input], Duration::from_secs(900));
    })
    .await
    .expect("waiter");
    let elapsed = started.elapsed();
    let after = testkit::rss_mib();
    let cpu = cpu_seconds() - cpu_before;
    stop.store(true, Ordering::SeqCst);
    running
        .await
        .expect("joined")
        .expect("runner stopped cleanly");
    (
        records as f64 / elapsed.as_secs_f64(),
        before,
        after,
        cpu * 1e6 / records as f64,
    )
}

/// This process's CPU time so far (user and system), seconds, from `/proc/self/stat` (0 where
/// it is not there).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
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

const WHICH: &str = "BENCH_PROCESSOR";

#[tokio::main]
async fn main() {
    let records: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    match std::env::var(WHICH) {
        Ok(which) => child(&which, records).await,
        Err(_) => parent(records),
    }
}

/// Runs each measurement in a process of its own, so one's memory does not count in another's.
fn parent(records: usize) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "processors: {records} patient inserts (Avro change events), {PARTITIONS} partitions, exactly-once, {cores} core(s) available to this process"
    );
    let exe = std::env::current_exe().expect("own path");
    let mut ceiling = None;
    for which in ["pass-through", "permissions", "deletions"] {
        let output = std::process::Command::new(&exe)
            .arg(records.to_string())
            .env(WHICH, which)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run a measurement");
        assert!(output.status.success(), "{which} failed");
        let line = String::from_utf8_lossy(&output.stdout);
        let figures: Vec<f64> = line
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [rate, before, after, cpu_us] = figures[..] else {
            panic!("{which} printed {line:?}");
        };
        let ceiling = *ceiling.get_or_insert(rate);
        println!(
            "  {which:<13} {rate:>8.0} events/s ({:>3.0}% of pass-through)   {cpu_us:>5.1} µs CPU per event   RSS {before:>6.1} MiB before the runner → {after:>6.1} MiB with {records} patients processed",
            100.0 * rate / ceiling,
        );
    }
}

async fn child(which: &str, records: usize) {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let schema: Arc<str> = Arc::from(OUT_SCHEMA);
    let (rate, before, after, cpu_us) = match which {
        "pass-through" => {
            measure(&endpoints, records, move || PassThrough {
                schema: Arc::clone(&schema),
            })
            .await
        }
        "permissions" => {
            measure(&endpoints, records, || {
                clinic_permissions::processor::Permissions::new(
                    clinic_permissions::config::Inputs::default(),
                )
            })
            .await
        }
        "deletions" => {
            measure(&endpoints, records, || {
                clinic_deletions::processor::Deletions::new(
                    clinic_deletions::config::Inputs::default(),
                )
            })
            .await
        }
        other => panic!("unknown {WHICH} {other}"),
    };
    println!("{rate} {before} {after} {cpu_us}");
}
