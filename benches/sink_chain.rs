//! How fast the repository's MongoDB sink connector applies sink records to the local database:
//! `<records>` (default 10,000) patient documents, as the processors write them (key `{"_id": …}`,
//! canonical Extended JSON value), produced to a 3-partition `sink.clinic.patients`; the clock
//! runs from the first record produced until the collection holds them all (or
//! `BENCH_DATABASE_WAIT_S`, default 600, has passed: then how many it holds by then). Prints
//! figures; asserts nothing. Needs the local stack; `scripts/bench-backends` runs it on FerretDB's
//! PostgreSQL and SQLite backends in turn.
//!
//! Run: `cargo bench --bench sink_chain [-- <records>]`.

use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use clinic::endpoints::Endpoints;
use clinic::testkit::{self, SinkChain};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const TOPIC: &str = "sink.clinic.patients";

#[tokio::main]
async fn main() {
    let records: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let cap = Duration::from_secs(
        std::env::var("BENCH_DATABASE_WAIT_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let endpoints = Endpoints::from_env().expect("endpoints");
    let chain = SinkChain::new(
        &endpoints,
        "bench-sink",
        &testkit::repo_root(0),
        &[(TOPIC, 3)],
        |t| t == TOPIC,
    )
    .await
    .expect("topic, sink, database");
    let clinic = ObjectId::new();
    let now = DateTime::now();
    let rows: Vec<(String, String)> = (0..records)
        .map(|n| {
            let id = ObjectId::new();
            let patient = doc! {
                "clinicId": clinic, "userId": format!("user{n:08}"),
                "fullName": format!("Patient Number {n}"), "birthDate": "1990-04-05",
                "email": format!("patient{n}@example.org"), "mrn": format!("MRN{n}"),
                "permissions": { "view": {}, "upload": {} }, "isMigrated": true,
                "createdTime": now, "updatedTime": now,
            };
            (
                clinic::streams::sink_key(&Bson::ObjectId(id)),
                Bson::Document(patient).into_canonical_extjson().to_string(),
            )
        })
        .collect();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &endpoints.kafka_brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let topic = format!("{}{TOPIC}", chain.prefix);
    let started = Instant::now();
    for chunk in rows.chunks(1_000) {
        let sends = chunk.iter().map(|(key, value)| {
            producer.send(
                FutureRecord::to(&topic).key(key).payload(value),
                Duration::from_secs(30),
            )
        });
        for sent in futures::future::join_all(sends).await {
            sent.map_err(|(e, _)| e).expect("produced");
        }
    }
    let produced = started.elapsed();
    let patients = chain.db.collection::<Document>("patients");
    let mut held = 0;
    while started.elapsed() < cap {
        held = patients
            .count_documents(doc! { "clinicId": clinic })
            .await
            .expect("count");
        if held == records as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    let connect = clinic::ops::connectors::Connect::new(&endpoints.connect_url);
    let mut tasks = Vec::new();
    for name in &chain.sinks {
        if let Ok(Some(status)) = connect.status(name).await {
            tasks.extend(status.tasks.iter().map(|t| t.state.clone()));
        }
    }
    testkit::remove_sinks(&endpoints, &chain.sinks)
        .await
        .expect("remove the connector");
    println!(
        "sink chain: {records} patient upserts through the MongoDB sink connector into FerretDB (produced in {:.2} s)",
        produced.as_secs_f64()
    );
    if held == records as u64 {
        println!(
            "  all in the collection after {:.2} s: {:.0} records/s",
            elapsed.as_secs_f64(),
            records as f64 / elapsed.as_secs_f64()
        );
    } else {
        println!(
            "  after {:.0} s (BENCH_DATABASE_WAIT_S) the collection holds {held} of {records} ({:.1} records/s); sink task {tasks:?}",
            elapsed.as_secs_f64(),
            held as f64 / elapsed.as_secs_f64()
        );
    }
}
