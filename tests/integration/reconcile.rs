//! `clinic reconcile permissions` against FerretDB and the real sink connectors: drift made in
//! gatekeeper (rows deleted, rows added that no document grants, rows changed) is found exactly,
//! `--fix` sends the corrections through the sink topics, the connectors apply them, and a second
//! run finds nothing.

use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::{Document, doc};
use clinic::ops::reconcile::{self, Options, Report};
use clinic::testkit;
use futures::TryStreamExt as _;

use crate::helpers;

const PATIENTS: usize = 60;
const CLINICIANS: usize = 20;

fn options(clinic: &str, gatekeeper: &str) -> Options {
    Options {
        clinic_db: clinic.to_owned(),
        gatekeeper_db: gatekeeper.to_owned(),
        samples: 100,
    }
}

async fn report(client: &mongodb::Client, options: &Options) -> Report {
    reconcile::permissions(client, options)
        .await
        .expect("the databases are read")
}

/// Waits until a report agrees (the connectors applied what was sent).
async fn until_agreed(client: &mongodb::Client, options: &Options) -> Report {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let report = report(client, options).await;
        if report.agrees() {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "gatekeeper still differs after 90 s:\n{}",
            report.render()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_in_gatekeeper_is_found_exactly_and_fixed_through_the_sink_topics() {
    let endpoints = helpers::stack(&["kafka", "connect", "mongodb"]).await;
    let prefix = format!("{}.", testkit::unique("reconcile"));
    let clinic_db = testkit::unique("clinic");
    let gatekeeper_db = testkit::unique("gatekeeper");
    testkit::create_topics(
        &endpoints,
        &prefix,
        &[
            ("sink.gatekeeper.patient_permissions", 1),
            ("sink.gatekeeper.clinician_permissions", 1),
        ],
    )
    .await
    .expect("topics");
    let deployed = testkit::deploy_sinks(
        &endpoints,
        &testkit::repo_root(0).join("connectors"),
        |t| t.starts_with("sink.gatekeeper.") && t != "sink.gatekeeper.perms",
        &prefix,
        &gatekeeper_db,
    )
    .await
    .expect("connectors");
    assert_eq!(deployed.len(), 2);
    let client = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
        .await
        .expect("mongo");
    let clinic = client.database(&clinic_db);
    let clinic_id = ObjectId::new();
    let patients: Vec<Document> = (0..PATIENTS + 10)
        .map(|n| {
            // The last ten grant nothing: no row is due for them.
            let permissions = if n < PATIENTS {
                doc! { "view": {}, "upload": {} }
            } else {
                doc! {}
            };
            doc! { "_id": ObjectId::new(), "clinicId": clinic_id, "userId": format!("p{n:04}"),
            "fullName": format!("Patient {n}"), "permissions": permissions }
        })
        .collect();
    let clinicians: Vec<Document> = (0..CLINICIANS)
        .map(|n| {
            doc! { "_id": ObjectId::new(), "clinicId": clinic_id, "userId": format!("c{n:04}"),
            "roles": ["CLINIC_MEMBER"] }
        })
        .collect();
    clinic
        .collection::<Document>("patients")
        .insert_many(&patients)
        .await
        .expect("patients");
    clinic
        .collection::<Document>("clinicians")
        .insert_many(&clinicians)
        .await
        .expect("clinicians");
    let options = options(&clinic_db, &gatekeeper_db);

    // An empty gatekeeper: every row is missing; fixed, it agrees.
    let empty = report(&client, &options).await;
    assert_eq!(empty.patients.missing.count, PATIENTS as u64);
    assert_eq!(empty.clinicians.missing.count, CLINICIANS as u64);
    let producer: rdkafka::producer::FutureProducer =
        clinic::endpoints::kafka_client(&endpoints.kafka_brokers)
            .create()
            .expect("producer");
    let sent = reconcile::fix(&producer, &prefix, &empty)
        .await
        .expect("sent");
    assert_eq!(sent, PATIENTS + CLINICIANS);
    until_agreed(&client, &options).await;

    // Drift: 10 rows deleted, 5 rows no document grants, 5 rows changed.
    let rows = client
        .database(&gatekeeper_db)
        .collection::<Document>("patient_permissions");
    let all: Vec<Document> = rows
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .expect("rows")
        .try_collect()
        .await
        .expect("rows");
    let deleted: Vec<_> = all[..10].iter().map(|r| r.get("_id").cloned()).collect();
    for id in &deleted {
        rows.delete_one(doc! { "_id": id.clone() })
            .await
            .expect("deleted");
    }
    let added: Vec<Document> = (0..5)
        .map(|n| {
            doc! { "_id": ObjectId::new(), "clinicId": clinic_id, "userId": format!("x{n}"),
            "permissions": { "view": {} } }
        })
        .collect();
    rows.insert_many(&added).await.expect("added");
    for row in &all[20..25] {
        rows.update_one(
            doc! { "_id": row.get("_id").cloned() },
            doc! { "$set": { "permissions": { "custodian": {} } } },
        )
        .await
        .expect("changed");
    }

    let drift = report(&client, &options).await;
    assert_eq!(drift.patients.missing.count, 10, "{}", drift.render());
    assert_eq!(drift.patients.extra.count, 5, "{}", drift.render());
    assert_eq!(drift.patients.different.count, 5, "{}", drift.render());
    assert_eq!(drift.patients.corrections.len(), 20);
    assert_eq!(drift.clinicians.corrections.len(), 0);
    let missing: Vec<_> = drift
        .patients
        .missing
        .samples
        .iter()
        .cloned()
        .map(Some)
        .collect();
    assert_eq!(missing, deleted);
    for (_, fields) in &drift.patients.different.samples {
        assert_eq!(fields, &["permissions".to_owned()]);
    }

    // The command: exit 3 while they differ; --fix sends the 20, and then they agree.
    let check = [
        "reconcile",
        "permissions",
        "--clinic-db",
        &clinic_db,
        "--gatekeeper-db",
        &gatekeeper_db,
    ];
    let fix = [&check[..], &["--fix"]].concat();
    let (endpoints_ref, prefix_ref) = (&endpoints, prefix.as_str());
    let checked =
        tokio::task::block_in_place(|| helpers::clinic(&check, endpoints_ref, prefix_ref).0);
    assert_eq!(checked, 3, "they differ");
    let fixed = tokio::task::block_in_place(|| helpers::clinic(&fix, endpoints_ref, prefix_ref).0);
    assert_eq!(fixed, 0);
    until_agreed(&client, &options).await;
    let again =
        tokio::task::block_in_place(|| helpers::clinic(&check, endpoints_ref, prefix_ref).0);
    assert_eq!(again, 0, "a second run finds nothing");
    testkit::remove_sinks(&endpoints, &deployed)
        .await
        .expect("connectors removed");
}
