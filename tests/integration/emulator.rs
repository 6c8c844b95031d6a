//! `clinic cdc emulate` against FerretDB and Kafka: every operation type, dotted paths, replace
//! and update told apart, the connector's dialect, and a restart that neither replays nor skips.
//! Its records are decoded by the processors' own decoder (`cdc::decode_avro`), as the real
//! connector's are.

use std::time::Duration;

use bson::{Bson, Document, doc};
use clinic::cdc::extjson::Dialect;
use clinic::cdc::{self, CdcRecord, ChangeEvent, Envelope, Operation};
use clinic::emulator::{Emulator, Published, Settings, Source};
use clinic::endpoints::Endpoints;
use clinic::streams::codec::AvroCodec;
use clinic::testkit;
use rdkafka::message::Message as _;

struct Rig {
    endpoints: Endpoints,
    settings: Settings,
    source: Source,
    db: mongodb::Database,
    /// Records of the patients topic read so far.
    read: usize,
}

impl Rig {
    async fn new(dialect: Dialect) -> Self {
        let endpoints = Endpoints::from_env().expect("endpoints");
        let token = testkit::unique("emu").replace('-', "");
        let database = format!("emu{}", &token[..12]);
        let prefix = format!("{token}.");
        let source = Source {
            database: database.clone(),
            collections: vec!["patients".into(), "clinics".into()],
            dialect,
            copy_existing: true,
        };
        let topics: Vec<String> = source
            .collections
            .iter()
            .map(|c| format!("{database}.{c}"))
            .collect();
        let topics: Vec<(&str, i32)> = topics.iter().map(|t| (t.as_str(), 2)).collect();
        testkit::create_topics(&endpoints, &prefix, &topics)
            .await
            .expect("topics");
        let db = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
            .await
            .expect("FerretDB")
            .database(&database);
        let settings = Settings {
            mongo_uri: endpoints.mongo_uri.clone(),
            brokers: endpoints.kafka_brokers.clone(),
            registry_url: endpoints.schema_registry_url(),
            topic_prefix: prefix,
            interval: Duration::from_millis(100),
        };
        Self {
            endpoints,
            settings,
            source,
            db,
            read: 0,
        }
    }

    async fn emulator(&self) -> Emulator {
        Emulator::start(self.settings.clone(), vec![self.source.clone()])
            .await
            .expect("started")
    }

    fn patients(&self) -> mongodb::Collection<Document> {
        self.db.collection("patients")
    }

    /// The patients topic's change events not read yet, decoded as a processor decodes them.
    async fn events(&mut self) -> Vec<ChangeEvent> {
        let topic = format!(
            "{}{}.patients",
            self.settings.topic_prefix, self.source.database
        );
        let codec = AvroCodec::new(&self.endpoints.schema_registry_url());
        let mut records = testkit::read_topic(&self.endpoints.kafka_brokers, &topic);
        records.sort_by_key(|r| {
            // Per document one partition: order by the emulator's sequence across partitions.
            let value = r.payload().map(<[u8]>::to_vec);
            (
                value.is_none(),
                r.timestamp().to_millis(),
                r.partition(),
                r.offset(),
            )
        });
        let mut events = Vec::new();
        for record in records.iter() {
            let value = codec.decode(record.payload()).await.expect("Avro");
            let key: serde_json::Value =
                serde_json::from_slice(record.key().expect("a key")).expect("a JSON key");
            assert!(key.get("_id").is_some(), "keyed by documentKey: {key}");
            match cdc::decode_avro(Envelope::MongoChangeStream, None, value.as_ref())
                .expect("decodes as the connector's")
            {
                CdcRecord::Change(event) => events.push(event),
                CdcRecord::Tombstone { .. } => panic!("the connector writes no tombstones"),
            }
        }
        // Across partitions, in the emulator's order (its sequence is the clusterTime increment).
        events.sort_by_key(|e| e.source.cluster_time.map(|t| t.increment));
        let fresh = events.split_off(self.read.min(events.len()));
        self.read += fresh.len();
        fresh
    }
}

fn ops(events: &[ChangeEvent]) -> Vec<Operation> {
    events.iter().map(|e| e.operation.clone()).collect()
}

#[tokio::test]
async fn every_operation_is_published_as_the_connector_would_with_dotted_paths() {
    let mut rig = Rig::new(Dialect::Canonical).await;
    let patients = rig.patients();
    let id = bson::oid::ObjectId::new();
    patients
        .insert_one(doc! {
            "_id": id, "fullName": "Kim", "profile": { "city": "Oslo", "zip": "0150" },
            "rolesUpdates": [{ "roles": ["A"] }], "mrn": "M1",
        })
        .await
        .expect("insert");
    let mut emulator = rig.emulator().await;
    assert_eq!(emulator.poll().await.expect("poll").inserts, 1);
    assert_eq!(
        emulator.poll().await.expect("poll"),
        Published::default(),
        "nothing changed"
    );
    patients
        .update_one(
            doc! { "_id": id },
            doc! {
                "$set": { "profile.city": "Bergen" },
                "$push": { "rolesUpdates": { "roles": ["B"] } },
                "$unset": { "mrn": "" },
            },
        )
        .await
        .expect("update");
    assert_eq!(emulator.poll().await.expect("poll").updates, 1);
    patients
        .replace_one(doc! { "_id": id }, doc! { "name": "Someone else" })
        .await
        .expect("replace");
    assert_eq!(emulator.poll().await.expect("poll").replaces, 1);
    patients
        .delete_one(doc! { "_id": id })
        .await
        .expect("delete");
    assert_eq!(emulator.poll().await.expect("poll").deletes, 1);

    let events = rig.events().await;
    assert_eq!(
        ops(&events),
        [
            Operation::Snapshot,
            Operation::Update,
            Operation::Replace,
            Operation::Delete
        ]
    );
    // The document there at the start is the connector's copy of it: an insert marked in its
    // `_id`, without oplog or wall time, which the decoder reads as a snapshot read.
    assert_eq!(
        events[0].source.resume_token,
        Some(doc! { "_id": id, "copyingData": true })
    );
    assert_eq!(
        (events[0].source.cluster_time, events[0].source.wall_time),
        (None, None)
    );
    assert!(events.iter().all(|e| e.document_key == doc! { "_id": id }));
    let update = &events[1];
    assert_eq!(
        update.updated_fields,
        doc! { "profile.city": "Bergen", "rolesUpdates.1": { "roles": ["B"] } }
    );
    assert_eq!(update.removed_fields, ["mrn"]);
    assert_eq!(
        update
            .full_document
            .as_ref()
            .and_then(|d| d.get_str("fullName").ok()),
        Some("Kim"),
        "updateLookup: the whole document"
    );
    assert_eq!(
        events[2].full_document,
        Some(doc! { "_id": id, "name": "Someone else" })
    );
    assert!(events[3].full_document.is_none());
    assert!(
        events
            .windows(2)
            .all(|w| w[0].source.resume_token != w[1].source.resume_token)
    );
}

#[tokio::test]
async fn a_restart_neither_replays_nor_skips_and_the_legacy_dialect_decodes_too() {
    let mut rig = Rig::new(Dialect::Legacy).await;
    let patients = rig.patients();
    let first = doc! { "_id": "p1", "fullName": "Ann", "createdTime": bson::DateTime::from_millis(1_700_000_000_000) };
    patients.insert_one(first.clone()).await.expect("insert");
    let mut emulator = rig.emulator().await;
    emulator.poll().await.expect("poll");
    drop(emulator);
    // While it is down: one more document, and a change to the first.
    patients
        .insert_one(doc! { "_id": "p2", "fullName": "Ben" })
        .await
        .expect("insert");
    patients
        .update_one(
            doc! { "_id": "p1" },
            doc! { "$set": { "fullName": "Ann B." } },
        )
        .await
        .expect("update");
    let mut restarted = rig.emulator().await;
    let published = restarted.poll().await.expect("poll");
    assert_eq!(
        (published.inserts, published.updates, published.total()),
        (1, 1, 2)
    );
    let events = rig.events().await;
    // One poll's events go in document-key order: p1's update, then p2's insert.
    assert_eq!(
        ops(&events),
        [Operation::Snapshot, Operation::Update, Operation::Insert]
    );
    assert_eq!(
        events[0]
            .full_document
            .as_ref()
            .and_then(|d| d.get("createdTime")),
        Some(&Bson::DateTime(bson::DateTime::from_millis(
            1_700_000_000_000
        ))),
        "dates survive the legacy dialect"
    );
    assert_eq!(events[1].updated_fields, doc! { "fullName": "Ann B." });
    assert_eq!(events[2].document_key, doc! { "_id": "p2" });
    let sequences: Vec<u32> = events
        .iter()
        .filter_map(|e| e.source.cluster_time.map(|t| t.increment))
        .collect();
    // The copy carries no clusterTime (as the connector's); the sequence goes on after it.
    assert_eq!(sequences, [2, 3], "the sequence goes on after the restart");
}

#[tokio::test]
async fn startup_mode_latest_publishes_only_what_changes_after_the_first_start() {
    let mut rig = Rig::new(Dialect::Canonical).await;
    rig.source.copy_existing = false;
    let patients = rig.patients();
    patients
        .insert_one(doc! { "_id": "old", "fullName": "There before" })
        .await
        .expect("insert");
    let mut emulator = rig.emulator().await;
    assert_eq!(emulator.poll().await.expect("poll"), Published::default());
    patients
        .insert_one(doc! { "_id": "new", "fullName": "Came later" })
        .await
        .expect("insert");
    assert_eq!(emulator.poll().await.expect("poll").inserts, 1);
    drop(emulator);
    // Restarted: the first start's starting point is remembered, nothing is published again.
    let mut restarted = rig.emulator().await;
    assert_eq!(restarted.poll().await.expect("poll"), Published::default());
    let events = rig.events().await;
    assert_eq!(ops(&events), [Operation::Insert]);
    assert_eq!(events[0].document_key, doc! { "_id": "new" });
}
