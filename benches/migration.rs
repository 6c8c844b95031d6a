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

/// Reads `topic` (read_committed) until a value contains `needle`.
fn await_value(brokers: &str, topic: &str, needle: &str) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", testkit::unique("bench-reader"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100))
            && message
                .payload()
                .is_some_and(|v| String::from_utf8_lossy(v).contains(needle))
        {
            return;
        }
        assert!(Instant::now() < deadline, "no {needle} on {topic}");
    }
}

#[tokio::main]
async fn main() {
    let patients: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    clinic::telemetry::init();
    let endpoints = Endpoints::from_env().expect("endpoints");
    let topology = Migrations::new(Default::default(), Default::default()).topology();
    let names = testkit::topics_of(&topology);
    let topics: Vec<(&str, i32)> = names
        .iter()
        .map(|t| {
            let one = t.ends_with(".changelog") || t.ends_with(".dlq") || t.ends_with(".steps");
            (t.as_str(), if one { 1 } else { 3 })
        })
        .collect();
    let sinks = [
        "sink.clinic.patients",
        "sink.clinic.migrations",
        "sink.gatekeeper.perms",
    ];
    let chain = SinkChain::new(
        &endpoints,
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
    let mut perms = Vec::with_capacity(patients);
    let mut events = vec![("clinic.clinics", insert("clinics", &clinic_doc))];
    for i in 0..patients {
        let user = format!("bench-patient-{i:06}");
        let share = doc! {
            "_id": ObjectId::new(), "sharerId": &user, "userId": LEGACY,
            "permissions": { "view": {}, "upload": {}, "note": {} },
        };
        let value = serde_json::json!({
            "fullName": format!("Patient {i}"), "email": format!("{user}@example.org"),
            "patient": { "birthday": "2001-02-03", "mrn": format!("MRN{i}") },
        });
        let profile = doc! { "_id": ObjectId::new(), "userId": &user, "value": value.to_string() };
        events.push(("gatekeeper.perms", insert("perms", &share)));
        events.push(("seagull.seagull", insert("seagull", &profile)));
        perms.push(share);
    }
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
    testkit::publish_changes(&endpoints, &chain.prefix, &events)
        .await
        .expect("publish");

    eprintln!(
        "published {} change events; loading the tables",
        events.len()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(runner::run_until(
        testkit::runner_config(&endpoints, &chain.prefix),
        || Migrations::new(Default::default(), Default::default()),
        Arc::clone(&stop),
        Arc::new(Health::default()),
    ));
    let inputs: Vec<String> = ["clinic.clinics", "gatekeeper.perms", "seagull.seagull"]
        .iter()
        .map(|t| format!("{}{t}", chain.prefix))
        .collect();
    let (brokers, group) = (
        endpoints.kafka_brokers.clone(),
        format!("{}{}", chain.prefix, topology.group_id()),
    );
    tokio::task::spawn_blocking(move || {
        testkit::await_committed(&brokers, &group, &inputs, Duration::from_secs(600));
    })
    .await
    .expect("waiter");
    let loaded = testkit::rss_mib();
    eprintln!("tables loaded; migrating");

    let started = Instant::now();
    testkit::publish_changes(
        &endpoints,
        &chain.prefix,
        &[("clinic.migrations", insert("migrations", &migration))],
    )
    .await
    .expect("publish the migration");
    let (brokers, status_topic) = (
        endpoints.kafka_brokers.clone(),
        format!("{}sink.clinic.migrations", chain.prefix),
    );
    tokio::task::spawn_blocking(move || await_value(&brokers, &status_topic, "COMPLETED"))
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
    testkit::remove_sinks(&endpoints, &chain.sinks)
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
