//! On the local stack: the `clinic-deletions` binary as three instances sharing the work (three
//! partitions), one SIGKILLed while deletions flow and a fourth added. Every patient and
//! clinician record of a deleted user, and every non-custodial patient of a clinic its deletions
//! left without clinicians, is archived and tombstoned exactly once in the committed output,
//! whichever instance held the clinic, and nothing else is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use clinic::cdc::{ChangeEvent, Operation};
use clinic::endpoints::Endpoints;
use clinic::streams::Processor as _;
use clinic::testkit::{self, Spawned};
use clinic_deletions::config::Inputs;
use clinic_deletions::processor::{
    CLINICIAN_DELETIONS, Deletions, PATIENT_DELETIONS, SINK_PATIENTS, sink_key,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const BINARY: &str = env!("CARGO_BIN_EXE_clinic-deletions");
const CLINICS: usize = 12;
/// Clinics whose admin and member are both deleted (the orphan rule applies).
const ORPHANED: usize = 4;

fn insert(coll: &str, document: &Document) -> ChangeEvent {
    let id = document.get("_id").cloned().expect("_id");
    testkit::change(Operation::Insert, coll, id, Some(document.clone()))
}

/// The clinics, their records, and which users go in which phase.
struct World {
    patients: Vec<Document>,
    clinicians: Vec<Document>,
    first: Vec<String>,
    second: Vec<String>,
}

fn world() -> World {
    let clinics: Vec<ObjectId> = (0..CLINICS).map(|_| ObjectId::new()).collect();
    let created = DateTime::from_millis(1_700_000_000_000);
    let patient = |clinic: ObjectId, user: &str, custodial: bool| {
        let permissions = if custodial {
            doc! { "custodian": {}, "view": {} }
        } else {
            doc! { "view": {}, "upload": {} }
        };
        doc! { "_id": ObjectId::new(), "clinicId": clinic, "userId": user, "fullName": user,
        "permissions": permissions, "createdTime": created }
    };
    let clinician = |clinic: ObjectId, user: &str, role: &str| {
        doc! { "_id": ObjectId::new(), "clinicId": clinic, "userId": user,
        "email": format!("{user}@example.org"), "roles": [role], "createdTime": created }
    };
    let (mut patients, mut clinicians) = (Vec::new(), Vec::new());
    for (i, clinic) in clinics.iter().enumerate() {
        clinicians.push(clinician(*clinic, &format!("a{i}"), "CLINIC_ADMIN"));
        clinicians.push(clinician(*clinic, &format!("m{i}"), "CLINIC_MEMBER"));
        for j in 0..6 {
            patients.push(patient(*clinic, &format!("p{i}.{j}"), j == 0));
        }
        // A user who is a patient of two clinics (likely held by two instances).
        if i + 1 < CLINICS {
            let shared = format!("s{i}");
            patients.push(patient(*clinic, &shared, false));
            patients.push(patient(clinics[i + 1], &shared, false));
        }
    }
    let mut first: Vec<String> = (0..CLINICS).map(|i| format!("p{i}.1")).collect();
    first.extend((0..CLINICS / 2).map(|i| format!("s{i}")));
    let mut second: Vec<String> = (0..CLINICS).map(|i| format!("p{i}.2")).collect();
    second.extend((CLINICS / 2..CLINICS - 1).map(|i| format!("s{i}")));
    for i in 0..ORPHANED {
        second.push(format!("m{i}"));
        second.push(format!("a{i}"));
    }
    World {
        patients,
        clinicians,
        first,
        second,
    }
}

impl World {
    /// The `_id`s (as sink keys) whose archives the deletions call for.
    fn expected(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let deleted: BTreeSet<&str> = self
            .first
            .iter()
            .chain(&self.second)
            .map(String::as_str)
            .collect();
        let user = |d: &Document| d.get_str("userId").expect("user").to_owned();
        let orphaned: BTreeSet<_> = self
            .clinicians
            .iter()
            .filter(|c| deleted.contains(user(c).as_str()))
            .map(|c| c.get_object_id("clinicId").expect("clinic"))
            .filter(|clinic| {
                self.clinicians.iter().all(|c| {
                    c.get_object_id("clinicId").ok() != Some(*clinic)
                        || deleted.contains(user(c).as_str())
                })
            })
            .collect();
        let key = |d: &Document| sink_key(d.get("_id").expect("_id"));
        let patients = self
            .patients
            .iter()
            .filter(|p| {
                let custodial = p
                    .get_document("permissions")
                    .is_ok_and(|m| m.contains_key("custodian"));
                deleted.contains(user(p).as_str())
                    || (orphaned.contains(&p.get_object_id("clinicId").expect("clinic"))
                        && !custodial)
            })
            .map(key)
            .collect();
        let clinicians = self
            .clinicians
            .iter()
            .filter(|c| deleted.contains(user(c).as_str()))
            .map(key)
            .collect();
        (patients, clinicians)
    }
}

fn start(endpoints: &Endpoints, prefix: &str, settings: &Path, log: PathBuf, id: &str) -> Spawned {
    let settings = settings.display().to_string();
    Spawned::start(
        Path::new(BINARY),
        endpoints,
        prefix,
        log,
        "info",
        &[
            ("CLINIC_SETTINGS", settings.as_str()),
            ("CLINIC__STREAMS__INSTANCE_ID", id),
        ],
    )
}

/// Publishes a deletion of each of `users` (binary-mode CloudEvents), `pause` apart.
async fn delete_users(endpoints: &Endpoints, prefix: &str, users: &[String], pause: Duration) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &endpoints.kafka_brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for user in users {
        let headers = clinic::events::binary_headers(
            clinic::events::USERS_DELETE,
            &format!("delete-{user}"),
            "shoreline",
            "2026-12-01T10:00:00Z",
        );
        let data = serde_json::json!({ "userid": user, "username": format!("{user}@example.org") });
        producer
            .send(
                FutureRecord::to(&format!("{prefix}user.events"))
                    .key(user)
                    .payload(&data.to_string())
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce the CloudEvent");
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_share_the_clinics_and_one_killed_and_one_added_repeat_nothing() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let prefix = format!("{}.", testkit::unique("delscale"));
    let names = testkit::topics_of(&Deletions::new(Inputs::default()).topology());
    let topics: Vec<(&str, i32)> = names
        .iter()
        .map(|t| (t.as_str(), if t.ends_with(".dlq") { 1 } else { 3 }))
        .collect();
    testkit::create_topics(&endpoints, &prefix, &topics)
        .await
        .expect("topics");
    let world = world();
    let mut events: Vec<(&str, ChangeEvent)> = world
        .patients
        .iter()
        .map(|p| ("clinic.patients", insert("patients", p)))
        .collect();
    events.extend(
        world
            .clinicians
            .iter()
            .map(|c| ("clinic.clinicians", insert("clinicians", c))),
    );
    testkit::publish_changes(&endpoints, &prefix, &events)
        .await
        .expect("publish");

    // A killed instance's partitions move on once its session expires (the broker's minimum).
    let dir = tempfile::tempdir().expect("a directory");
    let settings = dir.path().join("deletions.toml");
    std::fs::write(
        &settings,
        "[streams.librdkafka]\n\"session.timeout.ms\" = \"6000\"\n",
    )
    .expect("settings");
    let log = |id: &str| dir.path().join(format!("{id}.log"));
    let mut instances: BTreeMap<&str, Spawned> = ["one", "two", "three"]
        .into_iter()
        .map(|id| (id, start(&endpoints, &prefix, &settings, log(id), id)))
        .collect();
    testkit::await_spread(instances.values(), &format!("{prefix}clinic.patients")).await;
    delete_users(&endpoints, &prefix, &world.first, Duration::ZERO).await;
    let brokers = endpoints.kafka_brokers.clone();
    let archives = format!("{prefix}{PATIENT_DELETIONS}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while testkit::key_counts(&brokers, &archives, false).is_empty() {
        assert!(Instant::now() < deadline, "no archive within two minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The second half trickles in; one instance is killed while it does (most likely inside a
    // transaction), and another joins.
    let trickle = {
        let (endpoints, prefix, users) = (endpoints.clone(), prefix.clone(), world.second.clone());
        tokio::spawn(async move {
            delete_users(&endpoints, &prefix, &users, Duration::from_millis(25)).await;
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    instances.remove("two").expect("two runs").kill();
    instances.insert(
        "four",
        start(&endpoints, &prefix, &settings, log("four"), "four"),
    );

    trickle.await.expect("the second half published");
    let (patients, clinicians) = world.expected();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let archived: BTreeSet<String> = testkit::key_counts(&brokers, &archives, false)
            .into_keys()
            .collect();
        if archived.is_superset(&patients) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} patients archived",
            archived.intersection(&patients).count(),
            patients.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Everything read and acted on (a repeat would be committed by now), then the instances
    // stop cleanly.
    let topology = Deletions::new(Inputs::default()).topology();
    let (waited, scope) = (brokers.clone(), prefix.clone());
    tokio::task::spawn_blocking(move || {
        testkit::await_processed(&waited, &scope, &topology, Duration::from_secs(120));
    })
    .await
    .expect("the inputs read");
    testkit::stop_all(instances);

    let once = |set: &BTreeSet<String>| -> BTreeMap<String, usize> {
        set.iter().map(|k| (k.clone(), 1)).collect()
    };
    assert_eq!(
        testkit::key_counts(&brokers, &archives, false),
        once(&patients)
    );
    assert_eq!(
        testkit::key_counts(&brokers, &format!("{prefix}{CLINICIAN_DELETIONS}"), false),
        once(&clinicians)
    );
    assert_eq!(
        testkit::key_counts(&brokers, &format!("{prefix}{SINK_PATIENTS}"), true),
        once(&patients)
    );
}
