//! The migration every whole-chain test of the processor runs (included by each test binary): a
//! legacy clinician's 1,000 shared patients, their topics under a fresh prefix with the sink
//! connectors into a fresh database, the `clinic-migrations` binary, and the check that the
//! patients, `perms` and `migrations` collections and the email requests on
//! `notifications.requests` (read_committed) end exactly as computed here from the inputs.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use clinic::cdc::{ChangeEvent, Operation};
use clinic::endpoints::Endpoints;
use clinic::streams::Processor as _;
use clinic::testkit::{self, SinkChain, Spawned};
use clinic_migrations::model::patient_id;
use clinic_migrations::processor::Migrations;
use rdkafka::message::Message as _;

const SHARED: usize = 1_000;
const LEGACY: &str = "legacy-clinician";
const SINKS: [&str; 3] = [
    "sink.clinic.patients",
    "sink.clinic.migrations",
    "sink.gatekeeper.perms",
];

/// The documents of one run: what is in the databases and on the CDC topics before the
/// migration, and what the collections must hold after it.
pub struct World {
    pub migration: Document,
    pub perms: Vec<Document>,
    pub existing: Document,
    events: Vec<(&'static str, ChangeEvent)>,
    pub expected_patients: Vec<Document>,
}

fn user(i: usize) -> String {
    format!("patient-{i:04}")
}

fn insert(coll: &str, document: &Document) -> ChangeEvent {
    let id = document.get("_id").cloned().expect("_id");
    testkit::change(Operation::Insert, coll, id, Some(document.clone()))
}

pub fn world() -> World {
    let clinic = ObjectId::new();
    let created = DateTime::from_millis(1_790_000_000_000);
    let clinic_doc = doc! { "_id": clinic, "name": "Lakeside Clinic", "admins": [LEGACY] };
    let migration = doc! {
        "_id": ObjectId::new(), "clinicId": clinic, "userId": LEGACY, "status": "PENDING",
        "createdTime": created, "updatedTime": created,
    };
    let mut perms = vec![doc! {
        "_id": ObjectId::new(), "sharerId": LEGACY, "userId": LEGACY, "permissions": { "root": {} },
    }];
    let mut profiles = vec![doc! {
        "_id": ObjectId::new(), "userId": LEGACY,
        "value": r#"{"fullName":"Dr Lake","email":"lake@example.org"}"#,
    }];
    // Patient 0 is a patient of the clinic already: left as it is.
    let existing = doc! {
        "_id": ObjectId::new(), "clinicId": clinic, "userId": user(0), "fullName": "Known Patient",
        "birthDate": "1990-01-01", "permissions": { "view": {} }, "createdTime": created,
    };
    let mut expected_patients = vec![existing.clone()];
    for i in 0..SHARED {
        let (user, upload) = (user(i), i % 2 == 0);
        let permissions = if upload {
            doc! { "root": {}, "upload": {}, "view": {} }
        } else {
            doc! { "view": {} }
        };
        perms.push(doc! {
            "_id": ObjectId::new(), "sharerId": &user, "userId": LEGACY, "permissions": permissions,
        });
        let birthday = format!("20{:02}-0{}-1{}", i % 20, 1 + i % 9, i % 10);
        let value = serde_json::json!({
            "fullName": format!("Patient {i}"), "email": format!("{user}@example.org"),
            "patient": { "birthday": birthday, "mrn": format!("MRN{i}") },
        });
        profiles.push(doc! { "_id": ObjectId::new(), "userId": &user, "value": value.to_string() });
        if i > 0 {
            let migrated = if upload {
                doc! { "upload": {}, "view": {} }
            } else {
                doc! { "view": {} }
            };
            expected_patients.push(doc! {
                "_id": patient_id(&Bson::ObjectId(clinic), &user),
                "clinicId": clinic, "userId": &user, "fullName": format!("Patient {i}"),
                "birthDate": birthday, "email": format!("{user}@example.org"),
                "mrn": format!("MRN{i}"), "permissions": migrated, "isMigrated": true,
                "legacyClinicianIds": [LEGACY], "createdTime": created, "updatedTime": created,
            });
        }
    }
    let mut events = vec![
        ("clinic.clinics", insert("clinics", &clinic_doc)),
        ("clinic.patients", insert("patients", &existing)),
    ];
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
    events.push(("clinic.migrations", insert("migrations", &migration)));
    expected_patients.sort_by_key(testkit::id_order);
    World {
        migration,
        perms,
        existing,
        events,
        expected_patients,
    }
}

/// Topics (one partition for the DLQ; two for the rest: the CDC, repartition and changelog topics
/// and the requests), the three sinks, and the databases as they stood before the migration.
pub async fn chain(endpoints: &Endpoints, world: &World) -> SinkChain {
    let names =
        testkit::topics_of(&Migrations::new(Default::default(), Default::default()).topology());
    let topics: Vec<(&str, i32)> = names
        .iter()
        .map(|t| (t.as_str(), if t.ends_with(".dlq") { 1 } else { 2 }))
        .collect();
    let chain = SinkChain::new(endpoints, "migr", &testkit::repo_root(2), &topics, |t| {
        SINKS.contains(&t)
    })
    .await
    .expect("topics, sinks, database");
    let seed = |name: &str, documents: Vec<Document>| {
        let collection = chain.db.collection::<Document>(name);
        async move { collection.insert_many(documents).await.expect("seed") }
    };
    seed("perms", world.perms.clone()).await;
    seed("migrations", vec![world.migration.clone()]).await;
    seed("patients", vec![world.existing.clone()]).await;
    testkit::publish_changes(endpoints, &chain.prefix, &world.events)
        .await
        .expect("publish");
    chain
}

pub fn start(endpoints: &Endpoints, chain: &SinkChain, log: &Path, chunk: &str) -> Spawned {
    Spawned::start(
        Path::new(env!("CARGO_BIN_EXE_clinic-migrations")),
        endpoints,
        &chain.prefix,
        log.to_owned(),
        "info",
        &[("CLINIC__MIGRATION__CHUNK_SIZE", chunk)],
    )
}

/// Waits (up to three minutes) until the migration's status is COMPLETED in the database and
/// the sinks have written what the migration produced.
async fn await_migrated(chain: &SinkChain, world: &World) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let patients = testkit::collection(&chain.db, "patients")
            .await
            .expect("read");
        let perms = testkit::collection(&chain.db, "perms").await.expect("read");
        let migrations = testkit::collection(&chain.db, "migrations")
            .await
            .expect("read");
        let completed = migrations
            .first()
            .is_some_and(|m| m.get_str("status") == Ok("COMPLETED"));
        if completed && patients.len() == world.expected_patients.len() && perms.len() == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not migrated: status {:?}, {} patients, {} perms rows",
            migrations
                .first()
                .map(|m| m.get_str("status").map(str::to_owned)),
            patients.len(),
            perms.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The collections and requests equal what the inputs call for.
async fn check(endpoints: &Endpoints, chain: &SinkChain, world: &World) {
    let patients = testkit::collection(&chain.db, "patients")
        .await
        .expect("read");
    assert_eq!(patients.len(), world.expected_patients.len());
    for (seen, expected) in patients.iter().zip(&world.expected_patients) {
        assert_eq!(seen, expected);
    }
    let perms = testkit::collection(&chain.db, "perms").await.expect("read");
    assert_eq!(
        perms,
        world.perms[..1],
        "only the clinician's own row stays"
    );
    let migrations = testkit::collection(&chain.db, "migrations")
        .await
        .expect("read");
    let mut migration = migrations[0].clone();
    assert!(migration.remove("updatedTime").is_some());
    let mut expected = world.migration.clone();
    expected.remove("updatedTime");
    expected.insert("status", "COMPLETED");
    assert_eq!(migration, expected);
    let requests = testkit::read_topic(
        &endpoints.kafka_brokers,
        &format!("{}notifications.requests", chain.prefix),
    );
    let ids: BTreeSet<String> = requests
        .iter()
        .map(|r| String::from_utf8(r.key().expect("keyed").to_vec()).expect("text"))
        .collect();
    assert_eq!(
        requests.len(),
        SHARED + 1,
        "one request per patient, one for the clinician"
    );
    assert_eq!(ids.len(), SHARED + 1, "distinct ids");
    let dead = testkit::read_topic(
        &endpoints.kafka_brokers,
        &format!("{}migrations.dlq", chain.prefix),
    );
    assert!(dead.is_empty(), "nothing dead-lettered");
}

/// Waits for the migration in the database, stops the processor cleanly, checks everything and
/// removes the sinks.
pub async fn finish(endpoints: &Endpoints, chain: &SinkChain, world: &World, processor: Spawned) {
    await_migrated(chain, world).await;
    let (status, log) = processor.stop();
    assert!(status.success(), "{log}");
    check(endpoints, chain, world).await;
    testkit::remove_sinks(endpoints, &chain.sinks)
        .await
        .expect("remove connectors");
}

/// The processor's `/metrics` text (empty while it does not answer).
pub async fn metrics(processor: &Spawned) -> String {
    match reqwest::get(format!("http://{}/metrics", processor.admin)).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The committed statuses on `topic` (`sink.clinic.migrations` under a prefix), per migration in
/// order.
pub fn statuses(brokers: &str, topic: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut statuses: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for record in testkit::read_topic(brokers, topic) {
        let key = String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
        let value: serde_json::Value =
            serde_json::from_slice(record.payload().expect("a status row")).expect("JSON");
        let status = value["status"].as_str().expect("status").to_owned();
        statuses.entry(key).or_default().push(status);
    }
    statuses
}
