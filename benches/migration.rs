//! How long a legacy clinician's migration takes: `<patients>` shares (default 10,000) moved into
//! a clinic by the migrations processor (exactly-once, in-process, default chunk size) through the
//! repository's sink connectors into FerretDB. Prints figures; asserts nothing. Needs the local
//! stack.
//!
//! Run: `taskset -c 1 cargo bench --bench migration [-- <patients>]`. The shares, profiles and
//! the clinic are published and seeded first and the processor is left to read them (its
//! tables caught up); then the clock starts as the PENDING migration is published, and stops
//! (1) when the COMPLETED status record is committed on `sink.clinic.migrations` (read
//! committed), and (2) when COMPLETED is visible in the database with every migrated patient
//! and no legacy share left (or `BENCH_DATABASE_WAIT_S`, default 600, has passed: then how many
//! patients the database holds by then). RSS is the process's (the bench is the processor) once the tables
//! are loaded and once the migration is done.
//!
//! `BENCH_INSTANCES=1,2,3` then also runs six migrations at once (six legacy clinicians, each
//! with a sixth of `<patients>`, into six clinics) on processors run as that many processes
//! sharing three partitions, each count on fresh topics without sinks: the clock runs from
//! publishing the six PENDING migrations, the tables loaded, until six COMPLETED records are
//! committed; CPU is the instances' CPU time in that span (read from `/proc/<pid>/stat`), the
//! peak RSS the largest instance's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use clinic::cdc::{ChangeEvent, Operation};
use clinic::endpoints::Endpoints;
use clinic::streams::Processor as _;
use clinic::streams::kafka::Health;
use clinic::streams::runner;
use clinic::testkit::{self, SinkChain};
use clinic_migrations::processor::Migrations;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;

const LEGACY: &str = "bench-legacy-clinician";

fn insert(coll: &str, document: &Document) -> ChangeEvent {
    let id = document.get("_id").cloned().expect("_id");
    testkit::change(Operation::Insert, coll, id, Some(document.clone()))
}

/// Reads `topic` (read_committed) until `count` values contain `needle`.
fn await_values(brokers: &str, topic: &str, needle: &str, count: usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", testkit::unique("bench-reader"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut seen = 0;
    while seen < count {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100))
            && message
                .payload()
                .is_some_and(|v| String::from_utf8_lossy(v).contains(needle))
        {
            seen += 1;
        }
        assert!(Instant::now() < deadline, "{seen} {needle} on {topic}");
    }
}

/// Set in an instance's environment: the topics' prefix.
const CHILD: &str = "BENCH_MIGRATIONS_PREFIX";
/// Set in an instance's environment: its instance id.
const INSTANCE: &str = "BENCH_INSTANCE";
/// Migrations run at once with several instances.
const CLINICS: usize = 6;

#[tokio::main]
async fn main() {
    if let Ok(prefix) = std::env::var(CHILD) {
        return instance(prefix).await;
    }
    let patients: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    clinic::telemetry::init();
    let endpoints = Endpoints::from_env().expect("endpoints");
    one_migration(&endpoints, patients).await;
    let counts = std::env::var("BENCH_INSTANCES").unwrap_or_default();
    for instances in counts.split(',').filter_map(|n| n.parse::<usize>().ok()) {
        spread(&endpoints, patients, instances).await;
    }
}

/// The topics of the processor under `prefix`: three partitions each, the DLQ one.
fn topic_partitions(topology: &clinic::streams::Topology) -> Vec<(String, i32)> {
    testkit::topics_of(topology)
        .into_iter()
        .map(|t| {
            let partitions = if t.ends_with(".dlq") { 1 } else { 3 };
            (t, partitions)
        })
        .collect()
}

/// One legacy clinician's `patients` shares with their profiles.
fn shared_with(legacy: &str, patients: usize) -> (Vec<Document>, Vec<Document>) {
    let (mut perms, mut profiles) = (Vec::with_capacity(patients), Vec::with_capacity(patients));
    for i in 0..patients {
        let user = format!("{legacy}-patient-{i:06}");
        perms.push(doc! {
            "_id": ObjectId::new(), "sharerId": &user, "userId": legacy,
            "permissions": { "view": {}, "upload": {}, "note": {} },
        });
        let value = serde_json::json!({
            "fullName": format!("Patient {i}"), "email": format!("{user}@example.org"),
            "patient": { "birthday": "2001-02-03", "mrn": format!("MRN{i}") },
        });
        profiles.push(doc! { "_id": ObjectId::new(), "userId": &user, "value": value.to_string() });
    }
    (perms, profiles)
}

/// The single migration, through the sinks into the database.
async fn one_migration(endpoints: &Endpoints, patients: usize) {
    let topology = Migrations::new(Default::default(), Default::default()).topology();
    let names = topic_partitions(&topology);
    let topics: Vec<(&str, i32)> = names.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    let sinks = [
        "sink.clinic.patients",
        "sink.clinic.migrations",
        "sink.gatekeeper.perms",
    ];
    let chain = SinkChain::new(
        endpoints,
        "bench-migr",
        &testkit::repo_root(0),
        &topics,
        |t| sinks.contains(&t),
    )
    .await
    .expect("topics, sinks, database");

    let clinic = ObjectId::new();
    let created = DateTime::now();
    let clinic_doc = doc! { "_id": clinic, "name": "Bench Clinic", "admins": [LEGACY] };
    let migration = doc! {
        "_id": ObjectId::new(), "clinicId": clinic, "userId": LEGACY, "status": "PENDING",
        "createdTime": created, "updatedTime": created,
    };
    let (perms, profiles) = shared_with(LEGACY, patients);
    let mut events = vec![("clinic.clinics", insert("clinics", &clinic_doc))];
    events.extend(
        perms
            .iter()
            .map(|p| ("gatekeeper.perms", insert("perms", p))),
    );
    events.extend(
        profiles
            .iter()
            .map(|p| ("seagull.seagull", insert("seagull", p))),
    );
    chain
        .db
        .collection::<Document>("perms")
        .insert_many(&perms)
        .await
        .expect("seed perms");
    chain
        .db
        .collection::<Document>("migrations")
        .insert_one(&migration)
        .await
        .expect("seed the migration");
    testkit::publish_changes(endpoints, &chain.prefix, &events)
        .await
        .expect("publish");

    eprintln!(
        "published {} change events; loading the tables",
        events.len()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(runner::run_until(
        testkit::runner_config(endpoints, &chain.prefix),
        || Migrations::new(Default::default(), Default::default()),
        Arc::clone(&stop),
        Arc::new(Health::default()),
    ));
    await_loaded(endpoints, &topology, &chain.prefix).await;
    let loaded = testkit::rss_mib();
    eprintln!("tables loaded; migrating");

    let started = Instant::now();
    testkit::publish_changes(
        endpoints,
        &chain.prefix,
        &[("clinic.migrations", insert("migrations", &migration))],
    )
    .await
    .expect("publish the migration");
    let (brokers, status_topic) = (
        endpoints.kafka_brokers.clone(),
        format!("{}sink.clinic.migrations", chain.prefix),
    );
    tokio::task::spawn_blocking(move || await_values(&brokers, &status_topic, "COMPLETED", 1))
        .await
        .expect("waiter");
    let committed = started.elapsed();
    let done = testkit::rss_mib();
    eprintln!("COMPLETED committed; waiting for the database");

    let id = migration.get_object_id("_id").expect("oid");
    let cap = Duration::from_secs(
        std::env::var("BENCH_DATABASE_WAIT_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let (mut moved, mut completed) = (0, false);
    while started.elapsed() < cap {
        completed = chain
            .db
            .collection::<Document>("migrations")
            .find_one(doc! { "_id": id, "status": "COMPLETED" })
            .await
            .expect("read")
            .is_some();
        moved = chain
            .db
            .collection::<Document>("patients")
            .count_documents(doc! { "clinicId": clinic })
            .await
            .expect("count");
        let left = chain
            .db
            .collection::<Document>("perms")
            .count_documents(doc! {})
            .await
            .expect("count");
        if completed && moved == patients as u64 && left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let visible = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    running
        .await
        .expect("joined")
        .expect("runner stopped cleanly");
    testkit::remove_sinks(endpoints, &chain.sinks)
        .await
        .expect("remove connectors");

    let rate = |d: Duration| patients as f64 / d.as_secs_f64();
    println!("migration: {patients} shared patients, exactly-once, chunks of 500");
    println!(
        "  PENDING → COMPLETED committed on sink.clinic.migrations: {:>7.2} s ({:>7.0} patients/s)",
        committed.as_secs_f64(),
        rate(committed)
    );
    if completed && moved == patients as u64 {
        println!(
            "  PENDING → COMPLETED and every patient in the database:   {:>7.2} s ({:>7.0} patients/s, through the sink connectors into FerretDB)",
            visible.as_secs_f64(),
            rate(visible)
        );
    } else {
        println!(
            "  in the database after {:.0} s (BENCH_DATABASE_WAIT_S): {moved} of {patients} patients ({:.1}/s), status COMPLETED: {completed}",
            visible.as_secs_f64(),
            moved as f64 / visible.as_secs_f64()
        );
    }
    println!(
        "  processor RSS: {loaded:.1} MiB with the tables loaded, {done:.1} MiB after the migration"
    );
}

/// Waits until the processor's group has read the tables' topics and what it routed from them.
async fn await_loaded(endpoints: &Endpoints, topology: &clinic::streams::Topology, prefix: &str) {
    let (brokers, prefix, topology) = (
        endpoints.kafka_brokers.clone(),
        prefix.to_owned(),
        topology.clone(),
    );
    tokio::task::spawn_blocking(move || {
        testkit::await_processed(&brokers, &prefix, &topology, Duration::from_secs(600));
    })
    .await
    .expect("waiter");
}

/// Six migrations at once on `instances` processes.
async fn spread(endpoints: &Endpoints, patients: usize, instances: usize) {
    let topology = Migrations::new(Default::default(), Default::default()).topology();
    let prefix = format!("{}.", testkit::unique("bench-migr-spread"));
    let names = topic_partitions(&topology);
    let topics: Vec<(&str, i32)> = names.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    testkit::create_topics(endpoints, &prefix, &topics)
        .await
        .expect("topics");
    let each = patients / CLINICS;
    let created = DateTime::now();
    let (mut tables, mut migrations) = (Vec::new(), Vec::new());
    for i in 0..CLINICS {
        let (clinic, legacy) = (ObjectId::new(), format!("bench-legacy-{i}"));
        let (perms, profiles) = shared_with(&legacy, each);
        tables.push((
            "clinic.clinics",
            insert(
                "clinics",
                &doc! { "_id": clinic, "name": format!("Clinic {i}") },
            ),
        ));
        tables.extend(
            perms
                .iter()
                .map(|p| ("gatekeeper.perms", insert("perms", p))),
        );
        tables.extend(
            profiles
                .iter()
                .map(|p| ("seagull.seagull", insert("seagull", p))),
        );
        let migration = doc! {
            "_id": ObjectId::new(), "clinicId": clinic, "userId": &legacy, "status": "PENDING",
            "createdTime": created,
        };
        migrations.push(("clinic.migrations", insert("migrations", &migration)));
    }
    testkit::publish_changes(endpoints, &prefix, &tables)
        .await
        .expect("publish");
    let exe = std::env::current_exe().expect("own path");
    let mut children: Vec<std::process::Child> = (0..instances)
        .map(|instance| {
            std::process::Command::new(&exe)
                .env(CHILD, &prefix)
                .env(INSTANCE, format!("bench-{instance}"))
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .expect("run an instance")
        })
        .collect();
    await_loaded(endpoints, &topology, &prefix).await;
    let pids: Vec<String> = children.iter().map(|c| c.id().to_string()).collect();
    let cpu = || -> Vec<f64> { pids.iter().map(|p| testkit::cpu_seconds_of(p)).collect() };
    let cpu_before = cpu();
    let started = Instant::now();
    testkit::publish_changes(endpoints, &prefix, &migrations)
        .await
        .expect("publish the migrations");
    let (brokers, status_topic) = (
        endpoints.kafka_brokers.clone(),
        format!("{prefix}sink.clinic.migrations"),
    );
    tokio::task::spawn_blocking(move || {
        await_values(&brokers, &status_topic, "COMPLETED", CLINICS);
    })
    .await
    .expect("waiter");
    let elapsed = started.elapsed().as_secs_f64();
    let used: Vec<f64> = cpu()
        .iter()
        .zip(&cpu_before)
        .map(|(after, before)| after - before)
        .collect();
    let peak = pids
        .iter()
        .map(|p| testkit::peak_rss_mib_of(p))
        .fold(0.0, f64::max);
    for child in &mut children {
        drop(child.stdin.take());
    }
    for child in children {
        let output = child.wait_with_output().expect("an instance");
        assert!(output.status.success(), "an instance failed");
    }
    let shares = (each * CLINICS) as f64;
    let total: f64 = used.iter().sum();
    let busiest = used.iter().copied().fold(0.0, f64::max);
    println!(
        "  ×{instances}: {CLINICS} migrations of {each} shares at once: {elapsed:>6.2} s ({:>6.0} shares/s)   {:>5.1} µs CPU/share (all instances), busiest instance {busiest:.2} s CPU ({:>6.0} shares/s with a core each)   peak RSS {peak:>6.1} MiB (the largest)",
        shares / elapsed,
        total * 1e6 / shares,
        shares / busiest,
    );
}

/// One instance: the processor's runner until the parent closes standard input.
async fn instance(prefix: String) {
    if std::env::var_os("RUST_LOG").is_some() {
        clinic::telemetry::init();
    }
    let endpoints = Endpoints::from_env().expect("endpoints");
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = Arc::clone(&stop);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        stopper.store(true, Ordering::SeqCst);
    });
    let mut config = testkit::runner_config(&endpoints, &prefix);
    if let Ok(instance) = std::env::var(INSTANCE) {
        config.instance_id = instance;
    }
    runner::run_until(
        config,
        || Migrations::new(Default::default(), Default::default()),
        stop,
        Arc::new(Health::default()),
    )
    .await
    .expect("runner stopped cleanly");
}
