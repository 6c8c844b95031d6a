//! On the local stack: clinic documents in FerretDB, their change events in the source
//! connector's Avro form, and binary-mode CloudEvents deleting a user and changing another's
//! address flow through the processor (the real runner, one task over partitions of different
//! counts) and the repository's five clinic sink connectors; the patients, clinicians (one with
//! its new address), clinics' `admins` and both archive collections end up exactly as expected
//! (a clinic left with a pending invite only keeps its patients)
//! (handled after a restart: stores restored, indexes rebuilt), and again after the state is
//! reset and the inputs replayed by a fresh application id.

use clinic::streams::Processor as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use clinic::cdc::{ChangeEvent, Operation};
use clinic::endpoints::Endpoints;
use clinic::streams::disk::StateDb;
use clinic::streams::kafka::{Health, StreamsSettings};
use clinic::streams::runner;
use clinic::testkit;
use clinic_deletions::config::Inputs;
use clinic_deletions::processor::{
    CLINICIAN_CHANGES, CLINICIANS_BY_CLINIC, CLINICIANS_BY_USER, Deletions, PATIENT_CHANGES,
    PATIENT_STORE, PATIENTS_BY_CLINIC, PATIENTS_BY_USER,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn insert(coll: &str, document: &Document) -> ChangeEvent {
    let id = document.get_object_id("_id").expect("oid");
    testkit::change(Operation::Insert, coll, id, Some(document.clone()))
}

const DELETED_AT: &str = "2026-11-26T10:00:00Z";
const DELETED_MS: i64 = 1_795_687_200_000;

async fn seed(
    db: &mongodb::Database,
    clinics: &[Document],
    patients: &[Document],
    clinicians: &[Document],
) {
    for (name, docs) in [
        ("clinics", clinics),
        ("patients", patients),
        ("clinicians", clinicians),
    ] {
        let collection = db.collection::<Document>(name);
        collection.delete_many(doc! {}).await.expect("clear");
        collection.insert_many(docs.to_vec()).await.expect("seed");
    }
    for name in ["patient_deletions", "clinician_deletions"] {
        db.collection::<Document>(name)
            .delete_many(doc! {})
            .await
            .expect("clear");
    }
}

/// Partitions per topic: `count` for the inputs, repartition topics and changelogs (tasks are
/// per partition across them), one for the outputs and the DLQ.
fn partitions(topic: &str, count: i32) -> i32 {
    if topic.starts_with("sink.") || topic.ends_with(".dlq") {
        1
    } else {
        count
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_deletion_reaches_the_clinic_collections_also_after_a_replay() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let prefix = format!("{}.", testkit::unique("del"));
    let database = testkit::unique("clinic");
    let replay_id = testkit::unique("replay");
    // The topology's topics, and the changelogs and repartition topics of the replay under its
    // application id.
    let topology = Deletions::new(Inputs::default()).topology();
    let replayed = topology
        .clone()
        .with_application_id(Some(replay_id.clone()));
    let mut names = testkit::topics_of(&topology);
    names.extend(replayed.stores.iter().map(|s| replayed.changelog_topic(s)));
    names.extend(
        replayed
            .repartitions
            .iter()
            .map(|r| replayed.repartition_topic(r)),
    );
    let topics: Vec<(&str, i32)> = names
        .iter()
        .map(|t| (t.as_str(), partitions(t, 2)))
        .collect();
    testkit::create_topics(&endpoints, &prefix, &topics)
        .await
        .expect("topics");
    let deployed = testkit::deploy_sinks(
        &endpoints,
        &testkit::repo_root(2).join("connectors"),
        |t| {
            [
                "sink.clinic.patients",
                "sink.clinic.clinicians",
                "sink.clinic.clinics",
                "sink.clinic.patient_deletions",
                "sink.clinic.clinician_deletions",
            ]
            .contains(&t)
        },
        &prefix,
        &database,
    )
    .await
    .expect("connectors");
    assert_eq!(deployed.len(), 5);

    // Clinic A keeps a member after u1 goes; clinic B loses its only member, u1; clinic C too,
    // but has a pending clinician invite, which counts as a member (as Tidepool counts).
    let (a, b, c) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
    let created = DateTime::from_millis(1_700_000_000_000);
    let patient = |clinic: ObjectId, user: &str, permissions: Document| {
        doc! { "_id": ObjectId::new(), "clinicId": clinic, "userId": user, "fullName": format!("Patient {user}"),
        "permissions": permissions, "createdTime": created }
    };
    let clinician = |clinic: ObjectId, user: &str| {
        doc! { "_id": ObjectId::new(), "clinicId": clinic, "userId": user, "email": format!("{user}@example.org"),
        "roles": ["CLINIC_ADMIN"], "createdTime": created }
    };
    let u1_in_a = patient(a, "u1", doc! { "view": {}, "upload": {} });
    let u2_in_a = patient(a, "u2", doc! { "view": {} });
    let u3_in_b = patient(b, "u3", doc! { "view": {} });
    let u4_in_b = patient(b, "u4", doc! { "custodian": {} });
    let u6_in_c = patient(c, "u6", doc! { "view": {} });
    let u1_of_a = clinician(a, "u1");
    let u5_of_a = clinician(a, "u5");
    let u1_of_b = clinician(b, "u1");
    let u1_of_c = clinician(c, "u1");
    let invite_of_c = doc! { "_id": ObjectId::new(), "clinicId": c, "inviteId": "invite-c", "email": "invitee@example.org",
    "roles": ["CLINIC_MEMBER"], "createdTime": created };
    let patients = vec![
        u1_in_a.clone(),
        u2_in_a.clone(),
        u3_in_b.clone(),
        u4_in_b.clone(),
        u6_in_c.clone(),
    ];
    let clinicians = vec![
        u1_of_a.clone(),
        u5_of_a.clone(),
        u1_of_b.clone(),
        u1_of_c.clone(),
        invite_of_c.clone(),
    ];
    let clinic_doc = |id: ObjectId, admins: &[&str]| {
        doc! { "_id": id, "name": format!("Clinic {id}"), "admins": admins, "createdTime": created }
    };
    let clinics = vec![
        clinic_doc(a, &["u1", "u5"]),
        clinic_doc(b, &["u1"]),
        clinic_doc(c, &["u1"]),
    ];

    let db = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
        .await
        .expect("mongo")
        .database(&database);
    seed(&db, &clinics, &patients, &clinicians).await;
    let mut events: Vec<(&str, ChangeEvent)> = patients
        .iter()
        .map(|p| ("clinic.patients", insert("patients", p)))
        .collect();
    events.extend(
        clinicians
            .iter()
            .map(|c| ("clinic.clinicians", insert("clinicians", c))),
    );
    testkit::publish_changes(&endpoints, &prefix, &events)
        .await
        .expect("publish");
    // A first run reads the tables and stops: the deletion below is handled by a restarted
    // runner, from its documents and their indexes on disk (as the chart runs it: a state
    // directory), which a clean stop flushed with their checkpoints.
    let state = tempfile::tempdir().expect("a state directory");
    let config = StreamsSettings {
        state_dir: Some(state.path().to_owned()),
        ..testkit::runner_config(&endpoints, &prefix)
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(runner::run_until(
        config.clone(),
        || Deletions::new(Inputs::default()),
        Arc::clone(&shutdown),
        Arc::new(Health::default()),
    ));
    let (brokers, group) = (
        endpoints.kafka_brokers.clone(),
        format!("{prefix}{}", topology.group_id()),
    );
    let tables = vec![
        format!("{prefix}clinic.patients"),
        format!("{prefix}clinic.clinicians"),
    ];
    // Then what they were routed through, once it is all there.
    let routed = vec![
        format!("{prefix}{}", topology.repartition_topic(PATIENT_CHANGES)),
        format!("{prefix}{}", topology.repartition_topic(CLINICIAN_CHANGES)),
    ];
    tokio::task::spawn_blocking(move || {
        testkit::await_committed(&brokers, &group, &tables, Duration::from_secs(60));
        for topic in &routed {
            testkit::await_consumed(&brokers, &group, topic, Duration::from_secs(60));
        }
    })
    .await
    .expect("the tables read");
    shutdown.store(true, std::sync::atomic::Ordering::SeqCst);
    running
        .await
        .expect("the runner task joins")
        .expect("the runner stops cleanly");
    // As a version that adds the indexes finds the directory: documents on disk with their
    // checkpoints, the indexes absent. The restart rebuilds them; replaying only the tail would
    // leave them empty and delete nothing.
    {
        let group = format!("{prefix}{}", topology.group_id());
        let state_db = StateDb::open(&state.path().join(group)).expect("the state");
        let mut flushed = 0;
        for task in 0..2 {
            flushed += state_db.checkpoint(task, PATIENT_STORE).expect("read");
            state_db
                .wipe(
                    task,
                    &[
                        PATIENTS_BY_USER,
                        PATIENTS_BY_CLINIC,
                        CLINICIANS_BY_USER,
                        CLINICIANS_BY_CLINIC,
                    ],
                )
                .expect("indexes removed");
        }
        assert!(flushed > 0, "the patients were flushed to disk");
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &endpoints.kafka_brokers)
        .create()
        .expect("producer");
    // u1's account is deleted; u5 changes their address.
    for (kind, id, user, data) in [
        (
            clinic::events::USERS_DELETE,
            "delete-u1",
            "u1",
            r#"{"userid":"u1","username":"u1@example.org","fullName":"U One"}"#,
        ),
        (
            clinic::events::USERS_UPDATE,
            "update-u5",
            "u5",
            r#"{"original":{"userid":"u5","username":"u5@example.org"},"updated":{"userid":"u5","username":"u5.new@example.org"}}"#,
        ),
    ] {
        let headers = clinic::events::binary_headers(kind, id, "shoreline", DELETED_AT);
        producer
            .send(
                FutureRecord::to(&format!("{prefix}user.events"))
                    .key(user)
                    .payload(data)
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce the CloudEvent");
    }

    let deleted = DateTime::from_millis(DELETED_MS);
    let mut u5_renamed = u5_of_a.clone();
    u5_renamed.insert("email", "u5.new@example.org");
    u5_renamed.insert("updatedTime", deleted);
    let archive = |field: &str, document: &Document| {
        doc! { "_id": document.get_object_id("_id").expect("oid"), "deletedTime": deleted, field: document.clone() }
    };
    let expected = BTreeMap::from([
        (
            "patients",
            vec![u2_in_a.clone(), u4_in_b.clone(), u6_in_c.clone()],
        ),
        ("clinicians", vec![u5_renamed, invite_of_c.clone()]),
        // u1 leaves every clinic's `admins`; the rest of each clinic stays as it was.
        (
            "clinics",
            vec![
                clinic_doc(a, &["u5"]),
                clinic_doc(b, &[]),
                clinic_doc(c, &[]),
            ],
        ),
        (
            "patient_deletions",
            vec![archive("patient", &u1_in_a), archive("patient", &u3_in_b)],
        ),
        (
            "clinician_deletions",
            vec![
                archive("clinician", &u1_of_a),
                archive("clinician", &u1_of_b),
                archive("clinician", &u1_of_c),
            ],
        ),
    ]);
    let sorted: BTreeMap<String, Vec<Document>> = expected
        .iter()
        .map(|(name, docs)| {
            let mut docs = docs.clone();
            docs.sort_by_key(testkit::id_order);
            ((*name).to_owned(), docs)
        })
        .collect();
    let first = testkit::run_until_synced(
        config.clone(),
        || Deletions::new(Inputs::default()),
        &db,
        &expected,
    )
    .await;
    assert_eq!(first, sorted);

    // Replay: the collections as before the deletion, fresh state, the same input topics.
    seed(&db, &clinics, &patients, &clinicians).await;
    let replay = StreamsSettings {
        application_id: Some(replay_id),
        ..config
    };
    let second =
        testkit::run_until_synced(replay, || Deletions::new(Inputs::default()), &db, &expected)
            .await;
    testkit::remove_sinks(&endpoints, &deployed)
        .await
        .expect("remove connectors");
    assert_eq!(second, sorted);
}
