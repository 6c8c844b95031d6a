//! The migrations processor through the test driver: each step of a migration, chunks, a crash
//! between steps, existing patients, the clinician's own share, shares arriving while it runs
//! and after it completed, missing profiles, a missing clinic, a repeated trigger, malformed
//! input. Clinic events in the double-encoded JSON form Tidepool's connectors write.

#[path = "../chain/mod.rs"]
mod chain;
mod scale;
mod stack;

use std::collections::BTreeMap;

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use clinic::cdc::{self, ChangeEvent, Encoding, Envelope, Format, Operation};
use clinic::email::EmailRequest;
use clinic::streams::driver::TestDriver;
use clinic::streams::{OutValue, OutputRecord};
use clinic::testkit::change;
use clinic_migrations::config::{Inputs, Migration as Settings, Profiles};
use clinic_migrations::model::patient_id;
use clinic_migrations::processor::{
    CLINICS, MIGRATIONS, Migrations, PATIENTS, PERMS, PLACEMENTS, SINK_MIGRATIONS, SINK_PATIENTS,
    SINK_PERMS, STEPS, USER_EVENTS,
};
use serde_json::json;

const PROFILES: &str = "seagull.seagull";
const LEGACY: &str = "legacy1";

fn inputs() -> Inputs {
    let tidepool = Format {
        envelope: Envelope::MongoChangeStream,
        encoding: Encoding::Json,
    };
    Inputs {
        migrations: tidepool,
        perms: tidepool,
        patients: tidepool,
        clinics: tidepool,
        profiles: Profiles {
            topic: PROFILES.into(),
            envelope: tidepool.envelope,
            encoding: tidepool.encoding,
        },
        user_events: true,
    }
}

/// What the processor emitted, by topic, with the steps fed back as the runner would.
struct Harness {
    driver: TestDriver<Migrations>,
    patients: Vec<Document>,
    statuses: Vec<Document>,
    removed_shares: Vec<String>,
    requests: Vec<EmailRequest>,
}

fn document_of(record: &OutputRecord) -> Document {
    let Some(value) = record.value.as_ref().and_then(OutValue::to_json) else {
        panic!("a JSON row expected: {record:?}")
    };
    cdc::extjson::document_from_value(value).expect("Extended JSON")
}

impl Harness {
    fn new(chunk_size: usize) -> Self {
        Self {
            driver: TestDriver::new(Migrations::new(inputs(), Settings { chunk_size })).hold(STEPS),
            patients: Vec::new(),
            statuses: Vec::new(),
            removed_shares: Vec::new(),
            requests: Vec::new(),
        }
    }

    /// As Tidepool's connectors write it: DefaultJson text double-encoded by JsonConverter.
    fn pipe(&mut self, topic: &str, change: &ChangeEvent) {
        self.driver
            .pipe_tidepool_json(topic, change)
            .expect("no fatal error");
    }

    fn insert(&mut self, topic: &str, document: Document) {
        let id = document.get("_id").cloned().expect("_id");
        let coll = topic.split('.').nth(1).expect("db.coll");
        self.pipe(topic, &change(Operation::Insert, coll, id, Some(document)));
    }

    fn delete(&mut self, topic: &str, id: impl Into<Bson>) {
        let coll = topic.split('.').nth(1).expect("db.coll");
        self.pipe(topic, &change(Operation::Delete, coll, id, None));
    }

    /// Takes what was emitted, returning the step records (not fed back).
    fn collect(&mut self) -> Vec<OutputRecord> {
        for record in self.driver.read_output(SINK_PATIENTS) {
            self.patients.push(document_of(&record));
        }
        for record in self.driver.read_output(SINK_MIGRATIONS) {
            self.statuses.push(document_of(&record));
        }
        for record in self.driver.read_output(SINK_PERMS) {
            assert!(record.value.is_none(), "perms rows are only removed");
            self.removed_shares.push(record.key);
        }
        for record in self.driver.read_output(clinic::email::REQUESTS_TOPIC) {
            let Some(OutValue::Avro { value, .. }) = &record.value else {
                panic!("an Avro request expected")
            };
            let request = EmailRequest::from_avro(value).expect("a request");
            assert_eq!(record.key, request.id);
            self.requests.push(request);
        }
        self.driver.read_output(STEPS)
    }

    /// Pipes a held record of a repartition topic (a step, a placement) back in.
    fn pipe_back(&mut self, record: &OutputRecord) {
        let Some(OutValue::Json(value)) = &record.value else {
            panic!("a JSON record")
        };
        self.driver
            .pipe(
                &record.topic,
                Some(record.key.as_bytes()),
                Some(value.to_string().as_bytes()),
            )
            .expect("no fatal error");
    }

    /// Feeds steps back until the migration asks for none; returns how many ran.
    fn drain(&mut self) -> usize {
        let mut steps = 0;
        loop {
            let pending = self.collect();
            if pending.is_empty() {
                return steps;
            }
            for step in &pending {
                self.pipe_back(step);
                steps += 1;
            }
        }
    }

    fn statuses(&self) -> Vec<&str> {
        self.statuses
            .iter()
            .map(|s| s.get_str("status").expect("status"))
            .collect()
    }
}

fn oid(n: u32) -> ObjectId {
    ObjectId::parse_str(format!("65a1b2c3{n:016x}")).expect("hex")
}

fn clinic_doc(id: ObjectId) -> Document {
    doc! { "_id": id, "name": "Riverside Diabetes Clinic", "admins": [LEGACY] }
}

fn share(id: ObjectId, sharer: &str, grantee: &str, permissions: Document) -> Document {
    doc! { "_id": id, "sharerId": sharer, "userId": grantee, "permissions": permissions }
}

fn profile(id: ObjectId, user: &str, name: &str, email: Option<&str>) -> Document {
    let mut value = json!({ "fullName": name, "patient": { "birthday": "2010-05-06", "mrn": format!("MRN-{user}") } });
    if let Some(email) = email {
        value["email"] = json!(email);
    }
    doc! { "_id": id, "userId": user, "value": value.to_string() }
}

fn migration_doc(id: ObjectId, clinic: ObjectId, legacy: &str) -> Document {
    doc! {
        "_id": id, "clinicId": clinic, "userId": legacy, "status": "PENDING",
        "createdTime": DateTime::from_millis(1_790_000_000_000),
        "updatedTime": DateTime::from_millis(1_790_000_000_000),
    }
}

fn user_created(harness: &mut Harness, user: &str, username: &str) {
    let event = json!({
        "specversion": "1.0", "type": "users:create", "id": format!("c-{user}"),
        "source": "shoreline", "data": { "userid": user, "username": username },
    });
    harness
        .driver
        .pipe_with_headers(
            USER_EVENTS,
            Some(user.as_bytes()),
            Some(event.to_string().as_bytes()),
            &[("content-type", b"application/cloudevents+json")],
        )
        .expect("no fatal error");
}

const CLINIC: u32 = 1;
const MIGRATION: u32 = 2;

/// A clinic, the legacy clinician's profile and own row, and `n` patients sharing with the
/// legacy clinician (`p0`, `p1`, …; share ids 100 + i, profiles 200 + i, every patient with an
/// address).
fn world(harness: &mut Harness, n: u32) {
    harness.insert(CLINICS, clinic_doc(oid(CLINIC)));
    harness.insert(
        PROFILES,
        profile(oid(90), LEGACY, "Dr Legacy", Some("legacy@example.org")),
    );
    harness.insert(PERMS, share(oid(91), LEGACY, LEGACY, doc! { "root": {} }));
    for i in 0..n {
        let user = format!("p{i}");
        harness.insert(
            PERMS,
            share(
                oid(100 + i),
                &user,
                LEGACY,
                doc! { "view": {}, "upload": {}, "root": {} },
            ),
        );
        harness.insert(
            PROFILES,
            profile(
                oid(200 + i),
                &user,
                &format!("Patient {i}"),
                Some(&format!("{user}@example.org")),
            ),
        );
    }
}

fn trigger(harness: &mut Harness) {
    harness.insert(
        MIGRATIONS,
        migration_doc(oid(MIGRATION), oid(CLINIC), LEGACY),
    );
}

fn share_key(n: u32) -> String {
    clinic::streams::sink_key(&Bson::ObjectId(oid(n)))
}

fn users(patients: &[Document]) -> Vec<String> {
    let mut users: Vec<String> = patients
        .iter()
        .map(|p| p.get_str("userId").expect("userId").to_owned())
        .collect();
    users.sort();
    users
}

#[test]
fn a_migration_moves_each_share_into_the_clinic_and_completes() {
    let mut harness = Harness::new(500);
    world(&mut harness, 2);
    // A share with nothing to carry over, and one with another clinician: neither moves.
    harness.insert(PERMS, share(oid(150), "p9", LEGACY, doc! { "root": {} }));
    harness.insert(
        PERMS,
        share(oid(151), "p8", "someone-else", doc! { "view": {} }),
    );
    // A patient without a profile, whose address comes from the identity service.
    harness.insert(
        PERMS,
        share(oid(152), "q1", LEGACY, doc! { "note": {}, "custodian": {} }),
    );
    user_created(&mut harness, "q1", "q1@example.org");
    trigger(&mut harness);
    assert_eq!(harness.drain(), 0, "one chunk, no step");

    assert_eq!(harness.statuses(), ["RUNNING", "COMPLETED"]);
    assert_eq!(users(&harness.patients), ["p0", "p1", "q1"]);
    let p0 = harness
        .patients
        .iter()
        .find(|p| p.get_str("userId") == Ok("p0"))
        .expect("p0");
    let at = DateTime::from_millis(1_790_000_000_000);
    assert_eq!(
        p0,
        &doc! {
            "_id": patient_id(&Bson::ObjectId(oid(CLINIC)), "p0"),
            "clinicId": oid(CLINIC), "userId": "p0", "fullName": "Patient 0",
            "birthDate": "2010-05-06", "email": "p0@example.org", "mrn": "MRN-p0",
            "permissions": { "upload": {}, "view": {} }, "isMigrated": true,
            "legacyClinicianIds": [LEGACY], "createdTime": at, "updatedTime": at,
        }
    );
    let q1 = harness
        .patients
        .iter()
        .find(|p| p.get_str("userId") == Ok("q1"))
        .expect("q1");
    assert_eq!(q1.get_str("fullName"), Ok(""));
    assert_eq!(q1.get_str("birthDate"), Ok(""));
    assert_eq!(q1.get_str("email"), Ok("q1@example.org"));
    assert_eq!(
        q1.get_document("permissions"),
        Ok(&doc! { "custodian": {}, "note": {} })
    );
    let mut removed = harness.removed_shares.clone();
    removed.sort();
    assert_eq!(removed, [share_key(100), share_key(101), share_key(152)]);

    let templates: Vec<(&str, Option<&str>)> = harness
        .requests
        .iter()
        .map(|r| (r.template.as_str(), r.recipient_email.as_deref()))
        .collect();
    assert_eq!(
        templates,
        [
            ("migrate_patient", Some("p0@example.org")),
            ("migrate_patient", Some("p1@example.org")),
            ("migrate_patient", Some("q1@example.org")),
            ("clinic_migration_complete", Some("legacy@example.org")),
        ]
    );
    assert_eq!(
        harness.requests[0].variables,
        BTreeMap::from([
            ("ClinicName".into(), "Riverside Diabetes Clinic".into()),
            ("LegacyClinicianName".into(), "Dr Legacy".into()),
        ])
    );
    let complete = harness.requests.last().expect("complete");
    assert_eq!(complete.recipient_user_id.as_deref(), Some(LEGACY));
    assert_eq!(
        complete.id,
        format!(
            "migration:{{\"$oid\":\"{}\"}}:clinic_migration_complete:{LEGACY}",
            oid(MIGRATION).to_hex()
        )
    );
}

#[test]
fn a_migration_completes_only_once_the_clinic_has_taken_every_share() {
    let mut harness = Harness::new(500);
    harness.driver = TestDriver::new(Migrations::new(inputs(), Settings { chunk_size: 500 }))
        .hold(STEPS)
        .hold(PLACEMENTS);
    world(&mut harness, 3);
    trigger(&mut harness);
    harness.collect();
    // Every share sent on with its patient's profile, none placed in the clinic yet.
    let placements = harness.driver.read_output(PLACEMENTS);
    assert_eq!(placements.len(), 3);
    assert_eq!(harness.statuses(), ["RUNNING"]);
    assert!(harness.patients.is_empty() && harness.requests.is_empty());
    for placement in &placements[..2] {
        harness.pipe_back(placement);
    }
    harness.collect();
    assert_eq!(
        harness.statuses(),
        ["RUNNING"],
        "one share is still on its way"
    );
    assert_eq!(users(&harness.patients), ["p0", "p1"]);
    harness.pipe_back(&placements[2]);
    harness.collect();
    assert_eq!(harness.statuses(), ["RUNNING", "COMPLETED"]);
    assert_eq!(harness.requests.len(), 4);
}

#[test]
fn a_large_migration_runs_in_chunks_each_share_once() {
    let mut harness = Harness::new(3);
    world(&mut harness, 10);
    trigger(&mut harness);
    assert_eq!(harness.drain(), 3, "chunks of 3, 3, 3, 1");
    assert_eq!(harness.statuses(), ["RUNNING", "COMPLETED"]);
    assert_eq!(harness.patients.len(), 10);
    assert_eq!(users(&harness.patients).len(), 10);
    assert_eq!(harness.removed_shares.len(), 10);
    assert_eq!(harness.requests.len(), 11);
}

#[test]
fn a_crash_between_steps_resumes_from_the_stores_without_repeats_or_gaps() {
    let mut first = Harness::new(3);
    world(&mut first, 10);
    trigger(&mut first);
    let steps = first.collect();
    assert_eq!(steps.len(), 1);
    first.pipe_back(&steps[0]);
    let steps = first.collect();
    assert_eq!(steps.len(), 1);
    // The crash: this step's transaction never commits. Its outputs and changelog records are
    // lost; what committed before is what a restarted instance restores.
    let committed = first.driver.changelog().len();
    first.pipe_back(&steps[0]);
    let mut second = Harness::new(3);
    for record in &first.driver.changelog()[..committed] {
        let store = record
            .topic
            .strip_prefix("migrations.")
            .and_then(|t| t.strip_suffix(".changelog"))
            .expect("a changelog topic");
        let key = String::from_utf8(record.key.clone().expect("key")).expect("text");
        match &record.value {
            Some(value) => second.driver.preload(store, &key, value),
            None => panic!("no deletes expected before the end"),
        }
    }
    second.pipe_back(&steps[0]);
    second.drain();

    let patients: Vec<Document> = first
        .patients
        .iter()
        .chain(&second.patients)
        .cloned()
        .collect();
    let expected: Vec<String> = {
        let mut all: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
        all.sort();
        all
    };
    assert_eq!(users(&patients), expected, "each patient exactly once");
    let mut removed: Vec<String> = first
        .removed_shares
        .iter()
        .chain(&second.removed_shares)
        .cloned()
        .collect();
    removed.sort();
    removed.dedup();
    assert_eq!(removed.len(), 10);
    assert_eq!(first.removed_shares.len() + second.removed_shares.len(), 10);
    let ids: Vec<&str> = first
        .requests
        .iter()
        .chain(&second.requests)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(ids.len(), 11);
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 11);
    assert_eq!(first.statuses(), ["RUNNING"]);
    assert_eq!(second.statuses(), ["COMPLETED"]);
}

#[test]
fn an_existing_patient_is_left_as_it_is_but_its_share_still_moves() {
    let mut harness = Harness::new(500);
    world(&mut harness, 2);
    harness.insert(
        PATIENTS,
        doc! { "_id": oid(300), "clinicId": oid(CLINIC), "userId": "p1", "fullName": "Known",
        "permissions": { "view": {} } },
    );
    trigger(&mut harness);
    harness.drain();
    assert_eq!(users(&harness.patients), ["p0"]);
    assert_eq!(harness.removed_shares.len(), 2);
    assert_eq!(harness.requests.len(), 3);
}

#[test]
fn shares_arriving_while_it_runs_move_and_after_it_completed_stay() {
    let mut harness = Harness::new(2);
    world(&mut harness, 3);
    trigger(&mut harness);
    let steps = harness.collect();
    assert_eq!(steps.len(), 1, "moved p0 and p1, p2 left for a step");
    // Behind the cursor (id 99 sorts before 100 and 101): moved on arrival.
    harness.insert(
        PERMS,
        share(oid(99), "late-behind", LEGACY, doc! { "view": {} }),
    );
    assert_eq!(harness.patients.len(), 2);
    harness.collect();
    assert_eq!(users(&harness.patients), ["late-behind", "p0", "p1"]);
    // Ahead of the cursor: the next step takes it.
    harness.insert(
        PERMS,
        share(oid(140), "late-ahead", LEGACY, doc! { "view": {} }),
    );
    for step in &steps {
        harness.pipe_back(step);
    }
    harness.drain();
    assert_eq!(
        users(&harness.patients),
        ["late-ahead", "late-behind", "p0", "p1", "p2"]
    );
    assert_eq!(harness.statuses(), ["RUNNING", "COMPLETED"]);
    harness.insert(
        PERMS,
        share(oid(141), "too-late", LEGACY, doc! { "view": {} }),
    );
    harness.drain();
    assert_eq!(harness.patients.len(), 5);
    assert_eq!(harness.removed_shares.len(), 5);
}

#[test]
fn a_share_removed_before_the_migration_is_not_moved() {
    let mut harness = Harness::new(500);
    world(&mut harness, 2);
    harness.delete(PERMS, oid(100));
    trigger(&mut harness);
    harness.drain();
    assert_eq!(users(&harness.patients), ["p1"]);
}

#[test]
fn a_migration_into_a_clinic_that_does_not_exist_fails_and_writes_nothing_else() {
    let mut harness = Harness::new(500);
    world(&mut harness, 2);
    harness.insert(MIGRATIONS, migration_doc(oid(MIGRATION), oid(77), LEGACY));
    harness.drain();
    assert_eq!(harness.statuses(), ["FAILED"]);
    assert_eq!(
        harness.statuses[0].get_str("failureReason"),
        Ok("its clinic does not exist")
    );
    assert!(harness.patients.is_empty());
    assert!(harness.removed_shares.is_empty());
    assert!(harness.requests.is_empty());
}

#[test]
fn a_repeated_pending_insert_does_nothing() {
    let mut harness = Harness::new(500);
    world(&mut harness, 2);
    trigger(&mut harness);
    harness.drain();
    let (patients, requests) = (harness.patients.len(), harness.requests.len());
    trigger(&mut harness);
    harness.drain();
    assert_eq!(harness.patients.len(), patients);
    assert_eq!(harness.requests.len(), requests);
    assert_eq!(harness.statuses(), ["RUNNING", "COMPLETED"]);
}

#[test]
fn malformed_records_are_dead_lettered_and_the_rest_goes_on() {
    let mut harness = Harness::new(500);
    world(&mut harness, 1);
    harness.insert(
        MIGRATIONS,
        doc! { "_id": oid(5), "userId": LEGACY, "status": "PENDING" },
    );
    harness.insert(
        PROFILES,
        doc! { "_id": oid(6), "userId": "x", "value": "{broken" },
    );
    harness
        .driver
        .pipe(USER_EVENTS, None, Some(b"{\"not\":\"an event\"}"))
        .expect("no fatal error");
    assert_eq!(harness.driver.dead_letters().len(), 3);
    trigger(&mut harness);
    harness.drain();
    assert_eq!(harness.statuses(), ["RUNNING", "COMPLETED"]);
    assert_eq!(users(&harness.patients), ["p0"]);
}

#[test]
fn with_unique_mrns_a_migrated_patient_whose_mrn_is_taken_is_written_without_it() {
    let mut harness = Harness::new(500);
    world(&mut harness, 3);
    // The clinic keeps MRNs unique; one of its patients already has p0's MRN, and p2's
    // profile carries p1's.
    let mut clinic = clinic_doc(oid(CLINIC));
    clinic.insert("mrnSettings", doc! { "required": true, "unique": true });
    harness.insert(CLINICS, clinic);
    harness.insert(
        PATIENTS,
        doc! { "_id": oid(300), "clinicId": oid(CLINIC), "userId": "other", "fullName": "Known",
        "mrn": "MRN-p0", "permissions": { "view": {} } },
    );
    let mut p2 = profile(oid(202), "p2", "Patient 2", None);
    p2.insert(
        "value",
        json!({ "fullName": "Patient 2", "patient": { "birthday": "2010-05-06", "mrn": "MRN-p1" } })
            .to_string(),
    );
    harness.insert(PROFILES, p2);
    trigger(&mut harness);
    harness.drain();
    let mrns: std::collections::BTreeMap<String, String> = harness
        .patients
        .iter()
        .map(|p| {
            (
                p.get_str("userId").expect("userId").to_owned(),
                p.get_str("mrn").expect("mrn").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        mrns,
        [("p0", ""), ("p1", "MRN-p1"), ("p2", "")]
            .map(|(u, m)| (u.to_owned(), m.to_owned()))
            .into()
    );
    // Every share still moved.
    assert_eq!(harness.removed_shares.len(), 3);
    assert_eq!(harness.statuses().last(), Some(&"COMPLETED"));
}
