//! Gatekeeper's access check over rows this suite wrote (through the processor and the real sink
//! connectors) mixed with rows in the shape Tidepool's own sinks write, as during a switchover:
//! the two collections join on `clinicId` whichever side wrote a row.
//!
//! The check (`GET /access/:owner/:grantee`, `../shared/reference/tidepool-clinic-service.md`)
//! is one aggregation: `perms` matching sharerId=owner and userId=grantee, `$unionWith`
//! `patient_permissions` (userId=owner) `$lookup`-joined to `clinician_permissions` (userId=grantee,
//! same clinicId); the permission objects are merged. FerretDB implements neither `$unionWith` nor
//! `$lookup`, so where the server answers NotImplemented the same stages run as the queries they
//! amount to; the join still matches `clinicId` by BSON equality, types included, as `$lookup`
//! does.

use std::collections::BTreeMap;

use bson::oid::ObjectId;
use bson::{Bson, Document, doc};
use clinic::cdc::Operation;
use clinic::endpoints::Endpoints;
use clinic::streams::Processor as _;
use clinic::testkit::{self, SinkChain};
use clinic_permissions::config::Inputs;
use clinic_permissions::processor::Permissions;
use futures::TryStreamExt as _;

use crate::stack::change;

/// The pipeline gatekeeper runs on `perms`.
fn access_pipeline(owner: &str, grantee: &str) -> Vec<Document> {
    vec![
        doc! { "$match": { "sharerId": owner, "userId": grantee } },
        doc! { "$project": { "_id": 0, "permissions": 1 } },
        doc! { "$unionWith": {
            "coll": "patient_permissions",
            "pipeline": [
                { "$match": { "userId": owner } },
                { "$lookup": {
                    "from": "clinician_permissions",
                    "let": { "clinicId": "$clinicId" },
                    "pipeline": [{ "$match": { "$expr": { "$and": [
                        { "$eq": ["$userId", grantee] },
                        { "$eq": ["$clinicId", "$$clinicId"] },
                    ] } } }],
                    "as": "clinicians",
                } },
                { "$match": { "clinicians.0": { "$exists": true } } },
                { "$project": { "_id": 0, "permissions": 1 } },
            ],
        } },
    ]
}

/// The permissions `owner` grants `grantee`, merged, as gatekeeper computes them.
async fn access(db: &mongodb::Database, owner: &str, grantee: &str) -> Document {
    let rows: Vec<Document> = match db
        .collection::<Document>("perms")
        .aggregate(access_pipeline(owner, grantee))
        .await
    {
        Ok(cursor) => cursor.try_collect().await.expect("aggregation results"),
        Err(error) if is_not_implemented(&error) => access_by_queries(db, owner, grantee).await,
        Err(error) => panic!("the access aggregation failed: {error}"),
    };
    let mut merged = Document::new();
    for row in rows {
        if let Ok(permissions) = row.get_document("permissions") {
            merged.extend(permissions.clone());
        }
    }
    merged
}

fn is_not_implemented(error: &mongodb::error::Error) -> bool {
    matches!(&*error.kind, mongodb::error::ErrorKind::Command(c) if c.code == 238)
}

/// The pipeline's stages as plain queries: the `$lookup` matches the patient row's `clinicId`
/// value as it is stored.
async fn access_by_queries(db: &mongodb::Database, owner: &str, grantee: &str) -> Vec<Document> {
    let find = |collection: &str, filter: Document| {
        let collection = db.collection::<Document>(collection);
        async move {
            collection
                .find(filter)
                .await
                .expect("find")
                .try_collect::<Vec<Document>>()
                .await
                .expect("rows")
        }
    };
    let mut rows = find("perms", doc! { "sharerId": owner, "userId": grantee }).await;
    for patient in find("patient_permissions", doc! { "userId": owner }).await {
        let clinic = patient.get("clinicId").cloned().unwrap_or(Bson::Null);
        let members = find(
            "clinician_permissions",
            doc! { "userId": grantee, "clinicId": clinic },
        )
        .await;
        if !members.is_empty() {
            rows.push(patient);
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_written_by_the_suite_join_rows_written_by_tidepools_sinks() {
    let endpoints = Endpoints::from_env().expect("endpoints");
    let names = testkit::topics_of(&Permissions::new(Inputs::default()).topology());
    let topics: Vec<(&str, i32)> = names.iter().map(|t| (t.as_str(), 1)).collect();
    let SinkChain {
        prefix,
        db,
        sinks: deployed,
    } = SinkChain::new(&endpoints, "gk", &testkit::repo_root(2), &topics, |t| {
        t.starts_with("sink.gatekeeper.") && t.ends_with("_permissions")
    })
    .await
    .expect("topics, sinks, database");

    // The suite writes patient "ours" and clinician "our-doc" of the clinic, through the
    // processor and the sinks.
    let (clinic, other_clinic) = (ObjectId::new(), ObjectId::new());
    let (patient, clinician) = (ObjectId::new(), ObjectId::new());
    let events = [
        (
            "clinic.patients",
            change(
                Operation::Insert,
                "patients",
                patient,
                Some(
                    doc! { "_id": patient, "clinicId": clinic, "userId": "ours", "fullName": "P", "permissions": { "view": {}, "upload": {} } },
                ),
                &[],
            ),
        ),
        (
            "clinic.clinicians",
            change(
                Operation::Insert,
                "clinicians",
                clinician,
                Some(
                    doc! { "_id": clinician, "clinicId": clinic, "userId": "our-doc", "roles": ["CLINIC_MEMBER"] },
                ),
                &[],
            ),
        ),
    ];
    testkit::publish_changes(&endpoints, &prefix, &events)
        .await
        .expect("publish");
    let expected = BTreeMap::from([
        (
            "patient_permissions",
            vec![
                doc! { "_id": patient, "userId": "ours", "clinicId": clinic, "permissions": { "view": {}, "upload": {} } },
            ],
        ),
        (
            "clinician_permissions",
            vec![
                doc! { "_id": clinician, "userId": "our-doc", "clinicId": clinic, "roles": ["CLINIC_MEMBER"] },
            ],
        ),
    ]);
    let config = testkit::runner_config(&endpoints, &prefix);
    let synced = testkit::run_until_synced(
        config,
        || Permissions::new(Inputs::default()),
        &db,
        &expected,
    )
    .await;
    testkit::remove_sinks(&endpoints, &deployed)
        .await
        .expect("remove connectors");
    assert_eq!(
        synced.get("clinician_permissions"),
        expected.get("clinician_permissions")
    );

    // Rows Tidepool's sinks wrote (their AllowList projections of the clinic documents), of the
    // same clinic, and a clinician of another clinic; and a legacy share.
    db.collection::<Document>("patient_permissions")
        .insert_one(doc! { "_id": ObjectId::new(), "userId": "theirs", "clinicId": clinic, "permissions": { "note": {} } })
        .await
        .expect("insert");
    db.collection::<Document>("clinician_permissions")
        .insert_many([
            doc! { "_id": ObjectId::new(), "userId": "their-doc", "clinicId": clinic },
            doc! { "_id": ObjectId::new(), "userId": "elsewhere", "clinicId": other_clinic },
        ])
        .await
        .expect("insert");
    db.collection::<Document>("perms")
        .insert_one(
            doc! { "sharerId": "ours", "userId": "elsewhere", "permissions": { "view": {} } },
        )
        .await
        .expect("insert");

    let checks = [
        ("ours", "their-doc"),
        ("theirs", "our-doc"),
        ("ours", "our-doc"),
        ("theirs", "their-doc"),
        ("ours", "elsewhere"),
        ("theirs", "elsewhere"),
    ];
    let mut seen = Vec::new();
    for (owner, grantee) in checks {
        seen.push(access(&db, owner, grantee).await);
    }
    assert_eq!(
        seen,
        [
            doc! { "view": {}, "upload": {} },
            doc! { "note": {} },
            doc! { "view": {}, "upload": {} },
            doc! { "note": {} },
            doc! { "view": {} },
            doc! {},
        ]
    );
}
