//! The sink connector design, end to end on the real chain, with the repository's
//! `mongo-sink-gatekeeper-patient-permissions` connector pointed at a fresh topic and database:
//! - a record keyed `{"_id": <ObjectId>}` with a canonical Extended JSON value is written as
//!   `{_id: ObjectId, userId, clinicId: ObjectId, permissions: {view: {}, upload: {}}}` (the types
//!   gatekeeper's `$lookup` joins on), and a tombstone with the same key deletes the document;
//! - a record of an aborted transaction never reaches the collection (the sinks read
//!   `read_committed`).

use std::collections::BTreeMap;
use std::time::Duration;

use bson::{Bson, Document, doc, oid::ObjectId};
use clinic::endpoints::Endpoints;
use clinic::testkit::{self, SinkChain};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, FutureProducer, FutureRecord, Producer, ThreadedProducer};

use crate::helpers;

const TOPIC: &str = "sink.gatekeeper.patient_permissions";
const COLLECTION: &str = "patient_permissions";

/// A fresh topic prefix and database with the repository's patient-permissions sink on them.
async fn sink(endpoints: &Endpoints) -> (String, mongodb::Database, Vec<String>) {
    let chain = SinkChain::new(
        endpoints,
        "shapes",
        &testkit::repo_root(0),
        &[(TOPIC, 1)],
        |t| t == TOPIC,
    )
    .await
    .expect("topic, sink, database");
    (chain.prefix, chain.db, chain.sinks)
}

fn key(id: ObjectId) -> String {
    clinic::streams::sink_key(&Bson::ObjectId(id))
}

fn row(user: &str, clinic: ObjectId) -> String {
    Bson::Document(
        doc! { "userId": user, "clinicId": clinic, "permissions": { "view": {}, "upload": {} } },
    )
    .into_canonical_extjson()
    .to_string()
}

async fn produce(brokers: &str, topic: &str, key: &str, value: Option<&str>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    let mut record = FutureRecord::<str, str>::to(topic).key(key);
    if let Some(value) = value {
        record = record.payload(value);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("produced");
}

async fn expect_collection(db: &mongodb::Database, expected: Vec<Document>) -> Vec<Document> {
    testkit::await_collections(
        db,
        &BTreeMap::from([(COLLECTION, expected)]),
        Duration::from_secs(90),
    )
    .await
    .expect("reading the collection")
    .remove(COLLECTION)
    .unwrap_or_default()
}

#[tokio::test]
async fn patient_permissions_land_as_gatekeeper_reads_them_and_tombstones_delete() {
    let endpoints = helpers::stack(&["kafka", "connect", "mongodb"]).await;
    let (prefix, db, deployed) = sink(&endpoints).await;
    let topic = format!("{prefix}{TOPIC}");
    let (id, clinic) = (ObjectId::new(), ObjectId::new());

    produce(
        &endpoints.kafka_brokers,
        &topic,
        &key(id),
        Some(&row("a1b2c3d4e5", clinic)),
    )
    .await;
    let written = expect_collection(
        &db,
        vec![
            doc! { "_id": id, "userId": "a1b2c3d4e5", "clinicId": clinic, "permissions": { "view": {}, "upload": {} } },
        ],
    )
    .await;
    produce(&endpoints.kafka_brokers, &topic, &key(id), None).await;
    let after_tombstone = expect_collection(&db, vec![]).await;
    testkit::remove_sinks(&endpoints, &deployed)
        .await
        .expect("remove");

    assert_eq!(
        written,
        [
            doc! { "_id": id, "userId": "a1b2c3d4e5", "clinicId": clinic, "permissions": { "view": {}, "upload": {} } }
        ]
    );
    assert_eq!(after_tombstone, Vec::<Document>::new());
}

#[tokio::test]
async fn a_record_of_an_aborted_transaction_never_reaches_the_collection() {
    let endpoints = helpers::stack(&["kafka", "connect", "mongodb"]).await;
    let (prefix, db, deployed) = sink(&endpoints).await;
    let topic = format!("{prefix}{TOPIC}");
    let (aborted, committed, clinic) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
    let producer: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", &endpoints.kafka_brokers)
        .set("transactional.id", testkit::unique("aborting"))
        .create()
        .expect("producer");
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout).expect("init");
    for (id, commit) in [(aborted, false), (committed, true)] {
        producer.begin_transaction().expect("begin");
        let (key, value) = (key(id), row("u", clinic));
        producer
            .send(BaseRecord::to(&topic).key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .expect("send");
        producer.flush(timeout).expect("flush");
        if commit {
            producer.commit_transaction(timeout).expect("commit");
        } else {
            producer.abort_transaction(timeout).expect("abort");
        }
    }

    // The committed record comes after the aborted one in the partition: once it is written,
    // the aborted one would have been too, had the sink read it.
    let seen = expect_collection(
        &db,
        vec![
            doc! { "_id": committed, "userId": "u", "clinicId": clinic, "permissions": { "view": {}, "upload": {} } },
        ],
    )
    .await;
    testkit::remove_sinks(&endpoints, &deployed)
        .await
        .expect("remove");

    let ids: Vec<&Bson> = seen.iter().filter_map(|d| d.get("_id")).collect();
    assert_eq!(ids, [&Bson::ObjectId(committed)]);
}
