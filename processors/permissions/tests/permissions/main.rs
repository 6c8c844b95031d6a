//! The permissions processor through the test driver: every operation type, null
//! `fullDocument`, dotted-path updates, no-op updates, tombstones, malformed input, and the
//! double-encoded JSON form existing Tidepool connectors produce.

mod gatekeeper;
mod stack;

use bson::oid::ObjectId;
use bson::{Bson, Document, doc};
use clinic::cdc::extjson::Dialect;
use clinic::cdc::{self, CdcRecord, ChangeEvent, Encoding, Envelope, Format, Operation};
use clinic::streams::OutputRecord;
use clinic::streams::driver::TestDriver;
use clinic_permissions::config::Inputs;
use clinic_permissions::processor::{
    CLINICIAN_PERMISSIONS, CLINICIANS, PATIENT_PERMISSIONS, PATIENTS, Permissions, sink_key,
};

const CLINIC: &str = "60a1b2c3d4e5f60718293a4b";

fn json_inputs() -> Inputs {
    let tidepool = Format {
        envelope: Envelope::MongoChangeStream,
        encoding: Encoding::Json,
    };
    Inputs {
        patients: tidepool,
        clinicians: tidepool,
    }
}

fn driver() -> TestDriver<Permissions> {
    TestDriver::new(Permissions::new(json_inputs()))
}

fn event(
    operation: Operation,
    id: ObjectId,
    full: Option<Document>,
    updated: Document,
    removed: &[&str],
) -> ChangeEvent {
    ChangeEvent {
        updated_fields: updated,
        removed_fields: removed.iter().map(|s| (*s).to_owned()).collect(),
        ..clinic::testkit::change(operation, "patients", id, full)
    }
}

fn patient(id: ObjectId, permissions: Document) -> Document {
    doc! { "_id": id, "clinicId": ObjectId::parse_str(CLINIC).expect("oid"), "userId": "u1", "fullName": "Jane", "permissions": permissions }
}

/// As existing Tidepool connectors write it: DefaultJson text double-encoded by JsonConverter.
fn pipe(driver: &mut TestDriver<Permissions>, topic: &str, change: &ChangeEvent) {
    driver
        .pipe_tidepool_json(topic, change)
        .expect("no fatal error");
}

/// The row a record carries, parsed from its canonical Extended JSON (`None`: a tombstone).
fn row(record: &OutputRecord) -> Option<Document> {
    record.value.as_ref().map(|v| {
        let json = v
            .to_json()
            .unwrap_or_else(|| panic!("unexpected value {v:?}"));
        match Bson::try_from(json).expect("Extended JSON") {
            Bson::Document(row) => row,
            other => panic!("not a document: {other:?}"),
        }
    })
}

/// `(key, Some(grants))` per patient record, `(key, None)` per tombstone.
fn grants(records: &[OutputRecord]) -> Vec<(String, Option<Vec<String>>)> {
    records
        .iter()
        .map(|r| {
            let grants = row(r).map(|row| {
                let mut keys: Vec<String> = row
                    .get_document("permissions")
                    .expect("permissions")
                    .keys()
                    .cloned()
                    .collect();
                keys.sort();
                keys
            });
            (r.key.clone(), grants)
        })
        .collect()
}

#[test]
fn insert_emits_the_grant_keyed_by_the_document_id() {
    let mut driver = driver();
    let id = ObjectId::new();

    pipe(
        &mut driver,
        PATIENTS,
        &event(
            Operation::Insert,
            id,
            Some(patient(id, doc! { "view": {}, "upload": {} })),
            doc! {},
            &[],
        ),
    );

    let out = driver.read_output(PATIENT_PERMISSIONS);
    assert_eq!(
        grants(&out),
        [(
            sink_key(&bson::Bson::ObjectId(id)),
            Some(vec!["upload".into(), "view".into()])
        )]
    );
    assert_eq!(
        out[0].key,
        format!(r#"{{"_id":{{"$oid":"{}"}}}}"#, id.to_hex())
    );
    // The row as gatekeeper stores it: clinicId an ObjectId, each grant an empty document.
    assert_eq!(
        row(&out[0]),
        Some(doc! {
            "userId": "u1",
            "clinicId": ObjectId::parse_str(CLINIC).expect("oid"),
            "permissions": { "upload": {}, "view": {} },
        })
    );
}

#[test]
fn updates_that_do_not_touch_the_projection_emit_nothing() {
    let mut driver = driver();
    let id = ObjectId::new();
    let full = patient(id, doc! { "view": {} });
    pipe(
        &mut driver,
        PATIENTS,
        &event(Operation::Insert, id, Some(full.clone()), doc! {}, &[]),
    );
    driver.read_output(PATIENT_PERMISSIONS);

    let mut renamed = full.clone();
    renamed.insert("fullName", "Janet");
    pipe(
        &mut driver,
        PATIENTS,
        &event(
            Operation::Update,
            id,
            Some(renamed),
            doc! { "fullName": "Janet" },
            &[],
        ),
    );
    pipe(
        &mut driver,
        PATIENTS,
        &event(
            Operation::Update,
            id,
            Some(full),
            doc! { "summary.lastUpdated": 5 },
            &[],
        ),
    );

    assert!(driver.read_output(PATIENT_PERMISSIONS).is_empty());
}

#[test]
fn an_update_without_full_document_is_applied_by_dotted_path_to_the_stored_projection() {
    let mut driver = driver();
    let id = ObjectId::new();
    pipe(
        &mut driver,
        PATIENTS,
        &event(
            Operation::Insert,
            id,
            Some(patient(id, doc! { "view": {}, "note": {} })),
            doc! {},
            &[],
        ),
    );
    driver.read_output(PATIENT_PERMISSIONS);

    pipe(
        &mut driver,
        PATIENTS,
        &event(
            Operation::Update,
            id,
            None,
            doc! { "permissions.upload": {} },
            &["permissions.note"],
        ),
    );

    let out = driver.read_output(PATIENT_PERMISSIONS);
    assert_eq!(
        grants(&out)[0].1,
        Some(vec!["upload".into(), "view".into()])
    );
    // Rebuilt from the store, the clinic id is still an ObjectId.
    assert_eq!(
        row(&out[0]).expect("a row").get("clinicId"),
        Some(&Bson::ObjectId(ObjectId::parse_str(CLINIC).expect("oid")))
    );
}

#[test]
fn removing_the_last_permission_or_deleting_the_document_emits_a_tombstone() {
    let mut driver = driver();
    let (a, b) = (ObjectId::new(), ObjectId::new());
    pipe(
        &mut driver,
        PATIENTS,
        &event(
            Operation::Insert,
            a,
            Some(patient(a, doc! { "view": {} })),
            doc! {},
            &[],
        ),
    );
    pipe(
        &mut driver,
        PATIENTS,
        &event(
            Operation::Insert,
            b,
            Some(patient(b, doc! { "view": {} })),
            doc! {},
            &[],
        ),
    );
    driver.read_output(PATIENT_PERMISSIONS);

    pipe(
        &mut driver,
        PATIENTS,
        &event(
            Operation::Update,
            a,
            Some(patient(a, doc! {})),
            doc! {},
            &["permissions.view"],
        ),
    );
    pipe(
        &mut driver,
        PATIENTS,
        &event(Operation::Delete, b, None, doc! {}, &[]),
    );
    pipe(
        &mut driver,
        PATIENTS,
        &event(Operation::Delete, b, None, doc! {}, &[]),
    );

    let out = driver.read_output(PATIENT_PERMISSIONS);
    assert_eq!(
        out.iter().map(|r| r.value.is_none()).collect::<Vec<_>>(),
        [true, true],
        "one tombstone each, none repeated"
    );
    assert!(driver.store("patients").is_empty());
}

#[test]
fn a_debezium_tombstone_removes_the_grant() {
    let debezium = Format {
        envelope: Envelope::Debezium,
        encoding: Encoding::Json,
    };
    let mut driver = TestDriver::new(Permissions::new(Inputs {
        patients: debezium,
        clinicians: debezium,
    }));
    let id = ObjectId::new();
    let change = CdcRecord::Change(event(
        Operation::Insert,
        id,
        Some(patient(id, doc! { "view": {} })),
        doc! {},
        &[],
    ));
    let (key, value) = cdc::debezium::to_json(&change, Dialect::Relaxed);
    driver
        .pipe(
            PATIENTS,
            Some(key.to_string().as_bytes()),
            Some(value.expect("value").to_string().as_bytes()),
        )
        .expect("ok");
    let (key, _) = cdc::debezium::to_json(
        &CdcRecord::Tombstone {
            document_key: doc! { "_id": id },
        },
        Dialect::Relaxed,
    );

    driver
        .pipe(PATIENTS, Some(key.to_string().as_bytes()), None)
        .expect("ok");

    let out = driver.read_output(PATIENT_PERMISSIONS);
    assert_eq!(out.len(), 2);
    assert!(out[1].value.is_none());
}

#[test]
fn clinician_invites_grant_nothing_until_accepted_and_role_changes_emit() {
    let mut driver = driver();
    let id = ObjectId::new();
    let clinic = ObjectId::parse_str(CLINIC).expect("oid");
    let invite = doc! { "_id": id, "clinicId": clinic, "inviteId": "i1", "email": "dr@x.org", "roles": ["CLINIC_MEMBER"] };
    let accepted =
        doc! { "_id": id, "clinicId": clinic, "userId": "c1", "roles": ["CLINIC_MEMBER"] };
    let promoted = doc! { "_id": id, "clinicId": clinic, "userId": "c1", "roles": ["CLINIC_ADMIN"],
    "rolesUpdates": [{ "roles": ["CLINIC_ADMIN"], "updatedBy": "c0" }] };

    pipe(
        &mut driver,
        CLINICIANS,
        &event(Operation::Insert, id, Some(invite), doc! {}, &[]),
    );
    let before = driver.read_output(CLINICIAN_PERMISSIONS);
    pipe(
        &mut driver,
        CLINICIANS,
        &event(Operation::Replace, id, Some(accepted), doc! {}, &[]),
    );
    pipe(
        &mut driver,
        CLINICIANS,
        &event(
            Operation::Update,
            id,
            Some(promoted),
            doc! { "roles": ["CLINIC_ADMIN"], "rolesUpdates.0": {} },
            &[],
        ),
    );
    pipe(
        &mut driver,
        CLINICIANS,
        &event(Operation::Delete, id, None, doc! {}, &[]),
    );

    assert!(before.is_empty());
    let out = driver.read_output(CLINICIAN_PERMISSIONS);
    let roles: Vec<Option<Bson>> = out
        .iter()
        .map(|r| row(r).map(|row| row.get("roles").expect("roles").clone()))
        .collect();
    assert_eq!(
        roles,
        [
            Some(bson::bson!(["CLINIC_MEMBER"])),
            Some(bson::bson!(["CLINIC_ADMIN"])),
            None
        ]
    );
}

#[test]
fn malformed_records_go_to_the_dlq_and_the_next_ones_are_processed() {
    let mut driver = driver();
    let id = ObjectId::new();
    let mut bad = patient(id, doc! { "view": {} });
    bad.insert("permissions", "everything");

    driver
        .pipe(PATIENTS, None, Some(b"\"{not json"))
        .expect("ok");
    pipe(
        &mut driver,
        PATIENTS,
        &event(Operation::Insert, id, Some(bad), doc! {}, &[]),
    );
    let good = ObjectId::new();
    pipe(
        &mut driver,
        PATIENTS,
        &event(
            Operation::Insert,
            good,
            Some(patient(good, doc! { "view": {} })),
            doc! {},
            &[],
        ),
    );

    assert_eq!(driver.dead_letters().len(), 2);
    assert_eq!(
        driver.dead_letters()[1].header("clinic.error.processor"),
        Some("permissions")
    );
    assert_eq!(driver.read_output(PATIENT_PERMISSIONS).len(), 1);
}

/// The decoder builds only the fields the projection reads (`Topology::document_fields`): a
/// broken value elsewhere in the document does not stop the grant.
#[test]
fn a_broken_value_in_a_field_the_projection_does_not_read_is_no_poison() {
    let mut driver = driver();
    let id = ObjectId::new();
    let value = format!(
        r#"{{"operationType": "insert", "documentKey": {{"_id": {{"$oid": "{id}"}}}},
            "fullDocument": {{"_id": {{"$oid": "{id}"}}, "clinicId": {{"$oid": "{CLINIC}"}},
            "userId": "u1", "lastUploadReminderTime": {{"$date": "not a date"}},
            "permissions": {{"view": {{}}}}}}}}"#
    );

    driver
        .pipe(PATIENTS, None, Some(value.as_bytes()))
        .expect("no fatal error");

    assert!(driver.dead_letters().is_empty());
    assert_eq!(
        grants(&driver.read_output(PATIENT_PERMISSIONS)),
        vec![(sink_key(&Bson::ObjectId(id)), Some(vec!["view".to_owned()]))]
    );
}
