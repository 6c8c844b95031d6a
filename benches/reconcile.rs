//! `clinic reconcile permissions` over `<patients>` patients (default 100,000) and their
//! gatekeeper rows in the local FerretDB, a hundredth of the rows drifted: the comparison's time
//! and this process's memory growth. Prints figures; asserts nothing. Needs the local stack.
//!
//! Run: `cargo bench --bench reconcile [-- <patients>]`.

use std::time::Instant;

use bson::Document;
use bson::oid::ObjectId;
use clinic::endpoints::Endpoints;
use clinic::gatekeeper::{self, PatientGrant};
use clinic::ops::reconcile::{self, Options};
use clinic::streams::projection::Kept as _;
use clinic::testkit;

#[tokio::main]
async fn main() {
    let patients: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let endpoints = Endpoints::from_env().expect("endpoints");
    let client = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
        .await
        .expect("mongo");
    let (clinic_db, gatekeeper_db) = (testkit::unique("clinic"), testkit::unique("gatekeeper"));
    let clinics: Vec<ObjectId> = (0..40).map(|_| ObjectId::new()).collect();
    let seeding = Instant::now();
    for chunk in (0..patients).collect::<Vec<_>>().chunks(1_000) {
        let documents: Vec<Document> = chunk
            .iter()
            .map(|n| testkit::bench_patient(*n, clinics[n % clinics.len()]))
            .collect();
        // Every hundredth row is missing from gatekeeper.
        let rows: Vec<Document> = documents
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 100 != 0)
            .filter_map(|(_, d)| {
                let grant = PatientGrant::of(d).ok()??;
                Some(gatekeeper::row(d.get("_id")?, &grant))
            })
            .collect();
        client
            .database(&clinic_db)
            .collection::<Document>("patients")
            .insert_many(&documents)
            .await
            .expect("patients");
        client
            .database(&gatekeeper_db)
            .collection::<Document>(gatekeeper::PATIENT_PERMISSIONS)
            .insert_many(&rows)
            .await
            .expect("rows");
    }
    let seeded = seeding.elapsed();
    let rss_before = testkit::rss_mib();
    let report = reconcile::permissions(
        &client,
        &Options {
            clinic_db: clinic_db.clone(),
            gatekeeper_db: gatekeeper_db.clone(),
            samples: 5,
        },
    )
    .await
    .expect("reconciled");
    println!(
        "reconcile permissions: {patients} patients, {} rows present, {} missing: {:.1} s ({:.0} documents/s), RSS {:.0} MiB (+{:.0} MiB, peak {:.0} MiB); seeding took {:.0} s",
        report.patients.present,
        report.patients.missing.count,
        report.elapsed.as_secs_f64(),
        patients as f64 / report.elapsed.as_secs_f64(),
        testkit::rss_mib(),
        testkit::rss_mib() - rss_before,
        testkit::peak_rss_mib(),
        seeded.as_secs_f64()
    );
    for db in [clinic_db, gatekeeper_db] {
        client.database(&db).drop().await.expect("dropped");
    }
}
