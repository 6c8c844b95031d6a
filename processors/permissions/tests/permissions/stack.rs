//! On the local stack: change events in the source connector's Avro form flow through the
//! processor (the real runner) and the repository's two gatekeeper sink connectors into FerretDB,
//! and the gatekeeper collections end up exactly as expected; again after the collections are
//! dropped and the inputs replayed from the beginning by a fresh application id (consumer group
//! and state).

use std::collections::BTreeMap;

use bson::oid::ObjectId;
use bson::{Document, doc};
use clinic::cdc::{ChangeEvent, Operation};
use clinic::endpoints::Endpoints;
use clinic::streams::Processor as _;
use clinic::streams::kafka::StreamsSettings;
use clinic::testkit::{self, SinkChain};
use clinic_permissions::config::Inputs;
use clinic_permissions::processor::Permissions;

pub(crate) fn change(
    operation: Operation,
    coll: &str,
    id: ObjectId,
    full: Option<Document>,
    removed: &[&str],
) -> ChangeEvent {
    ChangeEvent {
        removed_fields: removed.iter().map(|s| (*s).to_owned()).collect(),
        truncated_arrays: Vec::new(),
        ..testkit::change(operation, coll, id, full)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn avro_change_events_reach_the_gatekeeper_collections_also_after_a_replay() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let replay_id = testkit::unique("replay");
    let mut names = testkit::topics_of(&Permissions::new(Inputs::default()).topology());
    names.extend([
        format!("{replay_id}.patients.changelog"),
        format!("{replay_id}.clinicians.changelog"),
    ]);
    let topics: Vec<(&str, i32)> = names.iter().map(|t| (t.as_str(), 2)).collect();
    let SinkChain {
        prefix,
        db,
        sinks: deployed,
    } = SinkChain::new(&endpoints, "perm", &testkit::repo_root(2), &topics, |t| {
        t.starts_with("sink.gatekeeper.") && t.ends_with("_permissions")
    })
    .await
    .expect("topics, sinks, database");
    assert_eq!(deployed.len(), 2);

    let clinic = ObjectId::new();
    let (p1, p2, p3, c1, c2) = (
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
    );
    let patient = |id: ObjectId, user: &str, permissions: Document| {
        doc! { "_id": id, "clinicId": clinic, "userId": user, "fullName": "P", "permissions": permissions }
    };
    let events = [
        (
            "clinic.patients",
            change(
                Operation::Insert,
                "patients",
                p1,
                Some(patient(p1, "u1", doc! { "view": {}, "upload": {} })),
                &[],
            ),
        ),
        (
            "clinic.patients",
            change(
                Operation::Insert,
                "patients",
                p2,
                Some(patient(p2, "u2", doc! { "view": {} })),
                &[],
            ),
        ),
        (
            "clinic.patients",
            change(
                Operation::Update,
                "patients",
                p2,
                None,
                &["permissions.view"],
            ),
        ),
        (
            "clinic.patients",
            change(
                Operation::Insert,
                "patients",
                p3,
                Some(patient(p3, "u3", doc! { "custodian": {} })),
                &[],
            ),
        ),
        (
            "clinic.clinicians",
            change(
                Operation::Insert,
                "clinicians",
                c1,
                Some(
                    doc! { "_id": c1, "clinicId": clinic, "userId": "d1", "roles": ["CLINIC_ADMIN"] },
                ),
                &[],
            ),
        ),
        (
            "clinic.clinicians",
            change(
                Operation::Insert,
                "clinicians",
                c2,
                Some(
                    doc! { "_id": c2, "clinicId": clinic, "inviteId": "i2", "roles": ["CLINIC_MEMBER"] },
                ),
                &[],
            ),
        ),
    ];
    testkit::publish_changes(&endpoints, &prefix, &events)
        .await
        .expect("publish");

    // p2 lost its last permission: its document must be gone; the invite grants nothing.
    let expected = BTreeMap::from([
        (
            "patient_permissions",
            vec![
                doc! { "_id": p1, "userId": "u1", "clinicId": clinic, "permissions": { "upload": {}, "view": {} } },
                doc! { "_id": p3, "userId": "u3", "clinicId": clinic, "permissions": { "custodian": {} } },
            ],
        ),
        (
            "clinician_permissions",
            vec![doc! { "_id": c1, "userId": "d1", "clinicId": clinic, "roles": ["CLINIC_ADMIN"] }],
        ),
    ]);
    let sorted = |docs: &BTreeMap<&str, Vec<Document>>| -> BTreeMap<String, Vec<Document>> {
        docs.iter()
            .map(|(name, docs)| {
                let mut docs = docs.clone();
                docs.sort_by_key(testkit::id_order);
                ((*name).to_owned(), docs)
            })
            .collect()
    };
    let config = testkit::runner_config(&endpoints, &prefix);
    let first = testkit::run_until_synced(
        config.clone(),
        || Permissions::new(Inputs::default()),
        &db,
        &expected,
    )
    .await;
    assert_eq!(first, sorted(&expected));

    // Replay: empty collections, a fresh application id (group and state), same inputs.
    db.drop().await.expect("drop");
    let replay = StreamsSettings {
        application_id: Some(replay_id),
        ..config
    };
    let second = testkit::run_until_synced(
        replay,
        || Permissions::new(Inputs::default()),
        &db,
        &expected,
    )
    .await;
    testkit::remove_sinks(&endpoints, &deployed)
        .await
        .expect("remove connectors");
    assert_eq!(second, sorted(&expected));
}
