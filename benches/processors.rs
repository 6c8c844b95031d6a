//! Events per second of each processor against the local broker (Avro in, each processor's own
//! output format, exactly-once, as deployed), next to the runtime's Avro pass-through; the time to
//! its first output, its CPU per event and its peak memory with `<records>` patients in the
//! stores. Prints figures; asserts nothing. Needs the local stack.
//!
//! Run on one core: `taskset -c 1 cargo bench --bench processors [-- <records>]` (default
//! 100000). `BENCH_INSTANCES=1,2,3` then also runs deletions as that many instances (processes)
//! sharing the partitions, each count on fresh topics: its clock ends once the routed changes
//! are consumed too; CPU per event is the instances' sum, the peak the largest. This process produces `<records>` patient inserts (the source connector's Avro change
//! events, ~300 B) to a 3-partition `clinic.patients`, then runs each processor in a child
//! process of its own, which holds nothing but the runner. The clock runs from the child's start
//! until its group's committed offsets reach the end of the input (deletions emits nothing for
//! inserts, so outputs cannot be the clock); the first output is the first committed record on
//! any topic the processor writes (outputs and changelogs). The child reports its RSS before the
//! runner starts, its peak RSS (`VmHWM`), its CPU time (`/proc/self/stat`) and its commits
//! (count, time: from the metrics it records, as a deployed processor does), once stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apache_avro::types::Value as Avro;
use bson::oid::ObjectId;
use clinic::cdc::{ChangeEvent, Encoding, Envelope, Format, Operation};
use clinic::endpoints::Endpoints;
use clinic::streams::kafka::Health;
use clinic::streams::runner;
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
            let document = testkit::bench_patient(n, clinics[n % clinics.len()]);
            let id = document.get_object_id("_id").expect("an ObjectId");
            let event = testkit::change(Operation::Insert, "patients", id, Some(document));
            ("clinic.patients", event)
        })
        .collect()
}

/// The topics one measurement needs, created under `prefix`, and its input published there.
async fn prepare(endpoints: &Endpoints, topology: &Topology, prefix: &str, records: usize) {
    let changelog_partitions = PARTITIONS;
    let mut topics: Vec<(String, i32)> = topology
        .input_topics()
        .into_iter()
        .map(|t| (t, PARTITIONS))
        .collect();
    topics.extend(
        topology
            .outputs
            .iter()
            .filter(|t| !topology.is_repartition(t))
            .map(|t| (t.clone(), PARTITIONS)),
    );
    topics.push((topology.dlq_topic(), 1));
    topics.extend(
        topology
            .stores
            .iter()
            .map(|s| (topology.changelog_topic(s), changelog_partitions)),
    );
    let topics: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    testkit::create_topics(endpoints, prefix, &topics)
        .await
        .expect("topics");
    testkit::publish_changes(endpoints, prefix, &patients(records))
        .await
        .expect("publish");
}

/// Runs the processor in this process until the parent closes its standard input, then prints
/// when it started (ms since the epoch), its RSS before the runner and at its peak (MiB), the
/// CPU time it used (s), and its commits' count and time (s). Metrics are recorded, as in a
/// deployed processor (whose admin endpoint installs the recorder).
async fn measure<P, F>(endpoints: &Endpoints, prefix: String, factory: F)
where
    P: Processor + 'static,
    F: Fn() -> P + Send + Clone + 'static,
{
    let before = testkit::rss_mib();
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = Arc::clone(&stop);
    std::thread::spawn(move || {
        // EOF on standard input: the parent saw the input committed.
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        stopper.store(true, Ordering::SeqCst);
    });
    let mut config = testkit::runner_config(endpoints, &prefix);
    if let Ok(instance) = std::env::var(INSTANCE) {
        config.instance_id = instance;
    }
    for (key, value) in std::env::var("BENCH_LIBRDKAFKA")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
    {
        config.librdkafka.insert(key.into(), value.into());
    }
    let metrics = clinic::telemetry::prometheus();
    let started = epoch_ms();
    tracing::info!("Starting the runner.");
    runner::run_until(config, factory, stop, Arc::new(Health::default()))
        .await
        .expect("runner stopped cleanly");
    let rendered = metrics.render();
    let metric = |name: &str| -> f64 {
        rendered
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    println!(
        "{started} {before} {} {} {} {}",
        testkit::peak_rss_mib(),
        testkit::cpu_seconds_of("self"),
        metric("clinic_streams_commit_latency_seconds_count"),
        metric("clinic_streams_commit_latency_seconds_sum"),
    );
}

fn epoch_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
        * 1e3
}

/// Waits for the first committed record on any of `topics` (what the processor writes: its
/// outputs and changelogs); returns when it came (ms since the epoch) and how many input events
/// `group` had committed by then (those the first transaction carried).
fn first_output(brokers: &str, topics: &[String], group: &str, input: &str) -> (f64, i64) {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", testkit::unique("first-output"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("reader");
    // Assigned, not subscribed: a group join could take longer than the processor's first
    // commit and would then be what the clock measures.
    let mut assignment = rdkafka::TopicPartitionList::new();
    for topic in topics {
        let metadata = reader
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        for p in 0..metadata.topics()[0].partitions().len() {
            let p = i32::try_from(p).expect("few partitions");
            assignment
                .add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                .expect("partition");
        }
    }
    reader.assign(&assignment).expect("assign");
    loop {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(50)) {
            use rdkafka::message::Message as _;
            if std::env::var_os("BENCH_DEBUG").is_some() {
                eprintln!(
                    "first output {} {:?} at {}",
                    m.topic(),
                    m.timestamp(),
                    epoch_ms()
                );
            }
            break;
        }
    }
    let at = epoch_ms();
    // Fetching on would read every output record on the measured processor's core: with
    // `taskset -c 1` it took 10-20% of that core for the first half second after the first
    // output. (Closed only after the offsets below are read: closing takes long enough for more
    // commits to land, which would count as carried by the first.)
    reader.unassign().expect("unassign");
    let committer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("committer");
    let mut wanted = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        wanted.add_partition(input, p);
    }
    let committed = committer
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("committed offsets");
    let carried = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(at) => at,
            _ => 0,
        })
        .sum();
    (at, carried)
}

const WHICH: &str = "BENCH_PROCESSOR";
const PREFIX: &str = "BENCH_PREFIX";
const INSTANCE: &str = "BENCH_INSTANCE";

#[tokio::main]
async fn main() {
    let records: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    match std::env::var(WHICH) {
        Ok(which) => child(&which).await,
        Err(_) => parent(records).await,
    }
}

/// One figure line per processor.
#[derive(Clone, Copy)]
struct Figures {
    rate: f64,
    rate_after_first: f64,
    first_output_s: f64,
    cpu_us: f64,
    before: f64,
    peak: f64,
    /// Transactions committed, and the seconds their commits took (the instances' sums).
    commits: f64,
    commit_s: f64,
    elapsed_s: f64,
}

/// Runs each measurement in a process of its own, so one's memory does not count in another's;
/// this process prepares the input and keeps the clocks, so neither counts in the measured one.
async fn parent(records: usize) {
    // `BENCH_ONLY=permissions` runs that one alone (to profile it); no state figure then.
    let only = std::env::var("BENCH_ONLY").ok();
    let only: Option<Vec<&str>> = only.as_deref().map(|o| o.split(',').collect());
    let endpoints = Endpoints::from_env().expect("endpoints");
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "processors: {records} patient inserts (Avro change events), {PARTITIONS} partitions, exactly-once, {cores} core(s) available to this process"
    );
    let mut baseline: Option<Figures> = None;
    for which in ["pass-through", "permissions", "deletions"] {
        if only.as_ref().is_some_and(|only| !only.contains(&which)) {
            continue;
        }
        let figures = run_one(&endpoints, which, records, 1).await;
        let base = *baseline.get_or_insert(figures);
        let state = if which == "pass-through" {
            "(no state)".to_owned()
        } else if only.is_some() {
            String::new()
        } else {
            format!(
                "state {:>4.0} B/entry",
                (figures.peak - base.peak) * 1_048_576.0 / records as f64
            )
        };
        println!(
            "  {which:<13} {:>7.0} events/s ({:>3.0}% of pass-through), {:>7.0} after the first output   first output {:>4.2} s   {:>5.1} µs CPU/event   RSS {:>5.1} MiB before the runner, peak {:>6.1} MiB   {state}",
            figures.rate,
            100.0 * figures.rate / base.rate,
            figures.rate_after_first,
            figures.first_output_s,
            figures.cpu_us,
            figures.before,
            figures.peak,
        );
        println!(
            "  {:<13} {:.0} commits, {:.1} ms each on average: {:.0}% of the run's wall time",
            "",
            figures.commits,
            1e3 * figures.commit_s / figures.commits.max(1.0),
            100.0 * figures.commit_s / figures.elapsed_s,
        );
    }
    println!(
        "  state per entry: the processor's peak RSS less pass-through's, over the {records} stored patients"
    );
    let counts = std::env::var("BENCH_INSTANCES").unwrap_or_default();
    for instances in counts.split(',').filter_map(|n| n.parse::<usize>().ok()) {
        let figures = run_one(&endpoints, "deletions", records, instances).await;
        println!(
            "  deletions ×{instances}  {:>7.0} events/s, {:>7.0} after the first output   first output {:>4.2} s   {:>5.1} µs CPU/event (all instances)   peak RSS {:>6.1} MiB (the largest)",
            figures.rate,
            figures.rate_after_first,
            figures.first_output_s,
            figures.cpu_us,
            figures.peak,
        );
    }
}

async fn run_one(endpoints: &Endpoints, which: &str, records: usize, instances: usize) -> Figures {
    let topology = topology(which);
    let prefix = format!("{}.", testkit::unique("bench"));
    prepare(endpoints, &topology, &prefix, records).await;
    let written: Vec<String> = topology
        .outputs
        .iter()
        .map(|t| topology.kafka_topic(t))
        .chain(topology.stores.iter().map(|s| topology.changelog_topic(s)))
        .map(|t| format!("{prefix}{t}"))
        .collect();
    let group = format!("{prefix}{}", topology.group_id());
    let input = format!("{prefix}clinic.patients");
    let routed: Vec<String> = topology
        .repartitions
        .iter()
        .map(|r| format!("{prefix}{}", topology.repartition_topic(r)))
        .collect();
    let watcher = {
        let (brokers, group, input) = (
            endpoints.kafka_brokers.clone(),
            group.clone(),
            input.clone(),
        );
        std::thread::spawn(move || first_output(&brokers, &written, &group, &input))
    };
    let exe = std::env::current_exe().expect("own path");
    let mut children: Vec<std::process::Child> = (0..instances)
        .map(|instance| {
            std::process::Command::new(&exe)
                .env(WHICH, which)
                .env(PREFIX, &prefix)
                .env(INSTANCE, format!("bench-{instance}"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .expect("run a measurement")
        })
        .collect();
    let brokers = endpoints.kafka_brokers.clone();
    // The clock stops when the waiter sees the input done, not once its clients are closed:
    // `await_routed` took 0.25 s even with nothing to read, 0.2 s of it closing its two clients,
    // and the clock counted it.
    let waiter = std::thread::spawn(move || {
        testkit::await_committed(&brokers, &group, &[input], Duration::from_secs(900));
        // Then what the input was routed through (nothing more comes once it is read).
        if routed.is_empty() {
            epoch_ms()
        } else {
            await_routed(&brokers, &group, &routed)
        }
    });
    while !waiter.is_finished() {
        for child in &mut children {
            if let Some(status) = child.try_wait().expect("the measurement's status") {
                panic!("{which} exited before processing its input: {status}");
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let ended = waiter.join().expect("waiter");
    let mut reports = Vec::new();
    for mut child in children {
        drop(child.stdin.take());
        let output = child.wait_with_output().expect("measurement");
        assert!(output.status.success(), "{which} failed");
        let line = String::from_utf8_lossy(&output.stdout).into_owned();
        let figures: Vec<f64> = line
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [started, before, peak, cpu, commits, commit_s] = figures[..] else {
            panic!("{which} printed {line:?}");
        };
        reports.push((started, before, peak, cpu, commits, commit_s));
    }
    let started = reports.iter().map(|r| r.0).fold(f64::MAX, f64::min);
    let before = reports.iter().map(|r| r.1).fold(0.0, f64::max);
    let peak = reports.iter().map(|r| r.2).fold(0.0, f64::max);
    let cpu: f64 = reports.iter().map(|r| r.3).sum();
    let (first, carried) = watcher.join().expect("first-output watcher");
    let elapsed = (ended - started) / 1e3;
    let after_first = (ended - first) / 1e3;
    Figures {
        rate: records as f64 / elapsed,
        rate_after_first: (records as f64 - carried as f64) / after_first,
        first_output_s: (first - started) / 1e3,
        cpu_us: cpu * 1e6 / records as f64,
        before,
        peak,
        commits: reports.iter().map(|r| r.4).sum(),
        commit_s: reports.iter().map(|r| r.5).sum(),
        elapsed_s: elapsed,
    }
}

/// Waits until `group` has committed every record of the repartition topics `topics`: a
/// `read_committed` reader placed at each partition's committed offset finds nothing more. (The
/// end offset cannot tell: several instances write each partition, and their transactions'
/// commit markers follow the last record.) Returns when it found so (ms since the epoch).
fn await_routed(brokers: &str, group: &str, topics: &[String]) -> f64 {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::error::KafkaError;
    let timeout = Duration::from_secs(10);
    let member: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", testkit::unique("routed"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("reader");
    let mut partitions = rdkafka::TopicPartitionList::new();
    for topic in topics {
        let metadata = member
            .fetch_metadata(Some(topic), timeout)
            .expect("metadata");
        for partition in metadata.topics()[0].partitions() {
            partitions.add_partition(topic, partition.id());
        }
    }
    loop {
        let committed = member
            .committed_offsets(partitions.clone(), timeout)
            .expect("committed offsets");
        let mut from = rdkafka::TopicPartitionList::new();
        for element in committed.elements() {
            let at = match element.offset() {
                rdkafka::Offset::Offset(at) => rdkafka::Offset::Offset(at),
                _ => rdkafka::Offset::Beginning,
            };
            from.add_partition_offset(element.topic(), element.partition(), at)
                .expect("a partition");
        }
        reader.assign(&from).expect("assign");
        let (mut ended, mut more) = (0, false);
        while ended < from.count() && !more {
            match reader.poll(timeout) {
                Some(Ok(_)) => more = true,
                Some(Err(KafkaError::PartitionEOF(_))) => ended += 1,
                Some(Err(error)) => panic!("reading the repartition topics: {error}"),
                None => more = true,
            }
        }
        if !more {
            return epoch_ms();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn topology(which: &str) -> Topology {
    match which {
        "pass-through" => PassThrough {
            schema: Arc::from(OUT_SCHEMA),
        }
        .topology(),
        "permissions" => permissions().topology(),
        "deletions" => deletions().topology(),
        other => panic!("unknown {WHICH} {other}"),
    }
}

fn permissions() -> clinic_permissions::processor::Permissions {
    clinic_permissions::processor::Permissions::new(clinic_permissions::config::Inputs::default())
}

fn deletions() -> clinic_deletions::processor::Deletions {
    clinic_deletions::processor::Deletions::new(clinic_deletions::config::Inputs::default())
}

async fn child(which: &str) {
    if std::env::var_os("RUST_LOG").is_some() {
        clinic::telemetry::init();
    }
    let endpoints = Endpoints::from_env().expect("endpoints");
    let prefix = std::env::var(PREFIX).expect("the parent names the topics' prefix");
    match which {
        "pass-through" => {
            let schema: Arc<str> = Arc::from(OUT_SCHEMA);
            measure(&endpoints, prefix, move || PassThrough {
                schema: Arc::clone(&schema),
            })
            .await;
        }
        "permissions" => measure(&endpoints, prefix, permissions).await,
        "deletions" => measure(&endpoints, prefix, deletions).await,
        other => panic!("unknown {WHICH} {other}"),
    }
}
