//! The deletions processor through the test driver: user deletions in every input form, the
//! clinic-without-members rule, updates without `fullDocument`, late documents, replays,
//! malformed input; all clinic events in the double-encoded JSON form Tidepool's connectors write.

mod scale;
mod stack;

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, doc};
use clinic::cdc::extjson::Dialect;
use clinic::cdc::{self, ChangeEvent, Encoding, Envelope, Format, Operation};
use clinic::streams::driver::TestDriver;
use clinic::streams::{OutValue, OutputRecord};
use clinic::testkit::change;
use clinic_deletions::config::{Inputs, UserTable};
use clinic_deletions::processor::{
    CLINICIAN_DELETIONS, CLINICIANS, Deletions, PATIENT_DELETIONS, PATIENTS, SINK_CLINICIANS,
    SINK_CLINICS, SINK_PATIENTS, USER_EVENTS, sink_key,
};
use serde_json::json;

const USER_TABLE: &str = "keycloak.public.user_entity";

fn inputs() -> Inputs {
    let tidepool = Format {
        envelope: Envelope::MongoChangeStream,
        encoding: Encoding::Json,
    };
    Inputs {
        patients: tidepool,
        clinicians: tidepool,
        user_events: true,
        user_table: Some(UserTable {
            topic: USER_TABLE.into(),
            encoding: Encoding::Json,
            id_column: "id".into(),
        }),
    }
}

fn driver() -> TestDriver<Deletions> {
    TestDriver::new(Deletions::new(inputs()))
}

/// As Tidepool's connectors write it: DefaultJson text double-encoded by JsonConverter.
fn pipe(driver: &mut TestDriver<Deletions>, topic: &str, change: &ChangeEvent) {
    driver
        .pipe_tidepool_json(topic, change)
        .expect("no fatal error");
}

fn patient(id: ObjectId, clinic: ObjectId, user: &str, permissions: Document) -> Document {
    doc! {
        "_id": id, "clinicId": clinic, "userId": user, "fullName": format!("Patient {user}"),
        "birthDate": "2001-02-03", "permissions": permissions,
        "createdTime": DateTime::from_millis(1_700_000_000_000),
    }
}

fn clinician(id: ObjectId, clinic: ObjectId, user: Option<&str>, roles: &[&str]) -> Document {
    let mut document =
        doc! { "_id": id, "clinicId": clinic, "email": "c@example.org", "roles": roles };
    match user {
        Some(user) => document.insert("userId", user),
        None => document.insert("inviteId", "invite-1"),
    };
    document
}

fn insert(driver: &mut TestDriver<Deletions>, topic: &str, document: &Document) {
    let id = document.get_object_id("_id").expect("oid");
    let coll = if topic == PATIENTS {
        "patients"
    } else {
        "clinicians"
    };
    pipe(
        driver,
        topic,
        &change(Operation::Insert, coll, id, Some(document.clone())),
    );
}

const DELETED_AT: &str = "2026-11-26T10:00:00Z";
const DELETED_MS: i64 = 1_795_687_200_000;

/// A binary-mode CloudEvent (attributes in headers, the value is the data).
fn delete_binary(driver: &mut TestDriver<Deletions>, user: &str) {
    let data = json!({ "userid": user, "username": "gone@example.org", "fullName": "Gone" });
    driver
        .pipe_with_headers(
            USER_EVENTS,
            Some(user.as_bytes()),
            Some(data.to_string().as_bytes()),
            &[
                ("ce_specversion", b"1.0"),
                ("ce_type", b"users:delete"),
                ("ce_id", b"e-1"),
                ("ce_source", b"shoreline"),
                ("ce_time", DELETED_AT.as_bytes()),
                ("content-type", b"application/json"),
            ],
        )
        .expect("no fatal error");
}

/// A structured-mode CloudEvent (the value is the whole event).
fn delete_structured(driver: &mut TestDriver<Deletions>, user: &str) {
    let event = json!({
        "specversion": "1.0", "type": "users:delete", "id": "e-2", "source": "shoreline",
        "time": DELETED_AT, "datacontenttype": "application/json",
        "data": { "userid": user, "username": "gone@example.org" },
    });
    driver
        .pipe_with_headers(
            USER_EVENTS,
            Some(user.as_bytes()),
            Some(event.to_string().as_bytes()),
            &[(
                "content-type",
                b"application/cloudevents+json; charset=UTF-8",
            )],
        )
        .expect("no fatal error");
}

/// The archived documents (`{_id, deletedTime, <field>}` parsed back) of the records.
fn archives(records: &[OutputRecord]) -> Vec<Document> {
    records
        .iter()
        .map(|r| match r.value.as_ref().and_then(OutValue::to_json) {
            Some(value) => cdc::extjson::document_from_value(value).expect("canonical extjson"),
            None => panic!("archive value {:?}", r.value),
        })
        .collect()
}

fn tombstone_keys(records: &[OutputRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            assert_eq!(r.value, None, "expected a tombstone");
            r.key.clone()
        })
        .collect()
}

#[test]
fn a_deleted_user_loses_every_patient_and_clinician_document_each_archived_first() {
    let mut driver = driver();
    let (clinic, other_clinic) = (ObjectId::new(), ObjectId::new());
    let (p1, p2, p3) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
    let (c1, c2) = (ObjectId::new(), ObjectId::new());
    let p1_doc = patient(p1, clinic, "u1", doc! { "view": {}, "upload": {} });
    insert(&mut driver, PATIENTS, &p1_doc);
    insert(
        &mut driver,
        PATIENTS,
        &patient(p2, other_clinic, "u1", doc! { "custodian": {} }),
    );
    insert(
        &mut driver,
        PATIENTS,
        &patient(p3, clinic, "u2", doc! { "view": {} }),
    );
    let c1_doc = clinician(c1, clinic, Some("u1"), &["CLINIC_ADMIN"]);
    insert(&mut driver, CLINICIANS, &c1_doc);
    insert(
        &mut driver,
        CLINICIANS,
        &clinician(c2, clinic, Some("u3"), &["CLINIC_ADMIN"]),
    );

    delete_binary(&mut driver, "u1");

    let patient_archives = archives(&driver.read_output(PATIENT_DELETIONS));
    let mut archived_ids: Vec<ObjectId> = patient_archives
        .iter()
        .map(|a| a.get_object_id("_id").expect("oid"))
        .collect();
    archived_ids.sort();
    let mut expected = vec![p1, p2];
    expected.sort();
    assert_eq!(archived_ids, expected);
    let p1_archive = patient_archives
        .iter()
        .find(|a| a.get_object_id("_id").ok() == Some(p1))
        .expect("p1 archived");
    assert_eq!(
        p1_archive,
        &doc! { "_id": p1, "deletedTime": DateTime::from_millis(DELETED_MS), "patient": p1_doc }
    );
    let mut tombstones = tombstone_keys(&driver.read_output(SINK_PATIENTS));
    tombstones.sort();
    let mut wanted = vec![sink_key(&Bson::ObjectId(p1)), sink_key(&Bson::ObjectId(p2))];
    wanted.sort();
    assert_eq!(tombstones, wanted);
    assert_eq!(
        archives(&driver.read_output(CLINICIAN_DELETIONS)),
        vec![
            doc! { "_id": c1, "deletedTime": DateTime::from_millis(DELETED_MS), "clinician": c1_doc }
        ]
    );
    assert_eq!(
        tombstone_keys(&driver.read_output(SINK_CLINICIANS)),
        vec![sink_key(&Bson::ObjectId(c1))]
    );
    // u1 was an admin: the clinic's `admins` without them.
    let clinics = driver.read_output(SINK_CLINICS);
    assert_eq!(clinics.len(), 1);
    assert_eq!(clinics[0].key, sink_key(&Bson::ObjectId(clinic)));
    assert_eq!(
        archives(&clinics),
        vec![doc! { "_id": clinic, "admins": ["u3"] }]
    );
    assert!(driver.dead_letters().is_empty());
}

#[test]
fn a_clinic_left_without_members_or_invites_loses_its_non_custodial_patients_only() {
    let mut driver = driver();
    // Clinic `open` keeps a pending invite after its last member goes; `empty` keeps nothing.
    let (open, empty) = (ObjectId::new(), ObjectId::new());
    let (custodial, shared, kept, c1, c2, invite) = (
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
    );
    insert(
        &mut driver,
        PATIENTS,
        &patient(custodial, empty, "u5", doc! { "custodian": {}, "view": {} }),
    );
    insert(
        &mut driver,
        PATIENTS,
        &patient(shared, empty, "u6", doc! { "view": {} }),
    );
    insert(
        &mut driver,
        PATIENTS,
        &patient(kept, open, "u7", doc! { "view": {} }),
    );
    for (id, clinic) in [(c1, empty), (c2, open)] {
        insert(
            &mut driver,
            CLINICIANS,
            &clinician(id, clinic, Some("u9"), &["CLINIC_ADMIN"]),
        );
    }
    insert(
        &mut driver,
        CLINICIANS,
        &clinician(invite, open, None, &["CLINIC_MEMBER"]),
    );

    delete_structured(&mut driver, "u9");

    let mut clinician_archives: Vec<ObjectId> = archives(&driver.read_output(CLINICIAN_DELETIONS))
        .iter()
        .map(|a| a.get_object_id("_id").expect("oid"))
        .collect();
    clinician_archives.sort();
    let mut expected = vec![c1, c2];
    expected.sort();
    assert_eq!(
        clinician_archives, expected,
        "the invite is no user's and stays"
    );
    // `open` keeps its patient: its pending invite counts, as in Tidepool's rule.
    let patient_archives = archives(&driver.read_output(PATIENT_DELETIONS));
    assert_eq!(patient_archives.len(), 1);
    assert_eq!(patient_archives[0].get_object_id("_id"), Ok(shared));
    assert_eq!(
        tombstone_keys(&driver.read_output(SINK_PATIENTS)),
        vec![sink_key(&Bson::ObjectId(shared))]
    );
}

#[test]
fn updates_without_full_document_are_applied_by_dotted_path_before_archiving() {
    let mut driver = driver();
    let (clinic, id) = (ObjectId::new(), ObjectId::new());
    insert(
        &mut driver,
        PATIENTS,
        &patient(id, clinic, "u1", doc! { "view": {} }),
    );
    let mut update = change(Operation::Update, "patients", id, None);
    update.updated_fields = doc! { "permissions.upload": {}, "fullName": "Renamed" };
    update.removed_fields = vec!["birthDate".into()];
    pipe(&mut driver, PATIENTS, &update);
    // A no-op for this processor: nothing is emitted by updates.
    assert!(driver.read_output(PATIENT_DELETIONS).is_empty());

    delete_binary(&mut driver, "u1");

    let archived = archives(&driver.read_output(PATIENT_DELETIONS));
    let document = archived[0].get_document("patient").expect("patient");
    assert_eq!(document.get_str("fullName"), Ok("Renamed"));
    assert_eq!(
        document.get_document("permissions"),
        Ok(&doc! { "view": {}, "upload": {} })
    );
    assert!(!document.contains_key("birthDate"));
}

#[test]
fn a_document_moved_to_another_user_is_reindexed() {
    let mut driver = driver();
    let (clinic, id) = (ObjectId::new(), ObjectId::new());
    insert(
        &mut driver,
        PATIENTS,
        &patient(id, clinic, "u1", doc! { "view": {} }),
    );
    let mut replace = patient(id, clinic, "u2", doc! { "view": {} });
    replace.insert("fullName", "Now u2");
    pipe(
        &mut driver,
        PATIENTS,
        &change(Operation::Replace, "patients", id, Some(replace)),
    );

    delete_binary(&mut driver, "u1");
    assert!(driver.read_output(PATIENT_DELETIONS).is_empty());
    delete_binary(&mut driver, "u2");
    assert_eq!(archives(&driver.read_output(PATIENT_DELETIONS)).len(), 1);
}

#[test]
fn a_document_moved_to_another_clinic_follows_its_rules_there_and_leaves_the_first() {
    let mut driver = driver();
    let (first, second, id) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
    for (clinic, user) in [(first, "c1"), (second, "c2")] {
        insert(
            &mut driver,
            CLINICIANS,
            &clinician(ObjectId::new(), clinic, Some(user), &["CLINIC_ADMIN"]),
        );
    }
    insert(
        &mut driver,
        PATIENTS,
        &patient(id, first, "u1", doc! { "view": {} }),
    );
    // Routed by clinic: the move reaches the first clinic's task as a delete, the second's as
    // the document.
    pipe(
        &mut driver,
        PATIENTS,
        &change(
            Operation::Replace,
            "patients",
            id,
            Some(patient(id, second, "u1", doc! { "view": {} })),
        ),
    );
    // The first clinic loses its last member: the patient is no longer there.
    delete_binary(&mut driver, "c1");
    assert!(driver.read_output(PATIENT_DELETIONS).is_empty());
    // The second one does: its non-custodial patient goes, once.
    delete_binary(&mut driver, "c2");
    let archived = archives(&driver.read_output(PATIENT_DELETIONS));
    assert_eq!(archived.len(), 1);
    assert_eq!(
        archived[0].get_document("patient").expect("archived")["clinicId"],
        Bson::ObjectId(second)
    );
    delete_binary(&mut driver, "u1");
    assert!(driver.read_output(PATIENT_DELETIONS).is_empty());
}

#[test]
fn deleting_a_user_twice_archives_once_and_a_late_document_goes_at_the_first_time() {
    let mut driver = driver();
    let (clinic, early, late) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
    insert(
        &mut driver,
        PATIENTS,
        &patient(early, clinic, "u7", doc! { "view": {} }),
    );
    delete_binary(&mut driver, "u7");
    assert_eq!(driver.read_output(PATIENT_DELETIONS).len(), 1);
    driver.read_output(SINK_PATIENTS);

    // The same user again, an hour later, by structured event: nothing left to archive.
    let event = json!({"specversion": "1.0", "type": "users:delete", "id": "e-3", "source": "s",
        "time": "2026-11-26T11:00:00Z", "data": {"userid": "u7"}});
    driver
        .pipe(USER_EVENTS, None, Some(event.to_string().as_bytes()))
        .expect("ok");
    assert!(driver.read_output(PATIENT_DELETIONS).is_empty());

    // A document of u7 arriving after the deletion (its topic lagging) goes at once.
    insert(
        &mut driver,
        PATIENTS,
        &patient(late, clinic, "u7", doc! { "view": {} }),
    );
    let archived = archives(&driver.read_output(PATIENT_DELETIONS));
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0].get_object_id("_id"), Ok(late));
    assert_eq!(
        archived[0].get_datetime("deletedTime"),
        Ok(&DateTime::from_millis(DELETED_MS))
    );
    assert_eq!(
        tombstone_keys(&driver.read_output(SINK_PATIENTS)),
        vec![sink_key(&Bson::ObjectId(late))]
    );
}

#[test]
fn documents_deleted_at_the_source_are_forgotten() {
    let mut driver = driver();
    let (clinic, a, b) = (ObjectId::new(), ObjectId::new(), ObjectId::new());
    insert(
        &mut driver,
        PATIENTS,
        &patient(a, clinic, "u1", doc! { "view": {} }),
    );
    insert(
        &mut driver,
        CLINICIANS,
        &clinician(b, clinic, Some("u1"), &["CLINIC_MEMBER"]),
    );
    pipe(
        &mut driver,
        PATIENTS,
        &change(Operation::Delete, "patients", a, None),
    );
    pipe(
        &mut driver,
        CLINICIANS,
        &change(Operation::Delete, "clinicians", b, None),
    );

    delete_binary(&mut driver, "u1");

    assert!(driver.read_output(PATIENT_DELETIONS).is_empty());
    assert!(driver.read_output(CLINICIAN_DELETIONS).is_empty());
    assert!(driver.store("patients").is_empty());
    assert!(driver.store("patients_by_user").is_empty());
    assert!(driver.store("clinicians_by_clinic").is_empty());
}

fn driver_with_debezium_clinicians() -> TestDriver<Deletions> {
    let mut inputs = inputs();
    inputs.clinicians = Format {
        envelope: Envelope::Debezium,
        encoding: Encoding::Json,
    };
    TestDriver::new(Deletions::new(inputs))
}

#[test]
fn a_debezium_tombstone_forgets_the_document() {
    let mut driver = driver_with_debezium_clinicians();
    let (clinic, id) = (ObjectId::new(), ObjectId::new());
    let created = cdc::CdcRecord::Change(change(
        Operation::Insert,
        "clinicians",
        id,
        Some(clinician(id, clinic, Some("u1"), &["CLINIC_ADMIN"])),
    ));
    let (key, value) = cdc::debezium::to_json(&created, Dialect::Relaxed);
    driver
        .pipe(
            CLINICIANS,
            Some(key.to_string().as_bytes()),
            value.map(|v| v.to_string()).as_deref().map(str::as_bytes),
        )
        .expect("ok");
    let tombstone = cdc::CdcRecord::Tombstone {
        document_key: doc! { "_id": id },
    };
    let (key, _) = cdc::debezium::to_json(&tombstone, Dialect::Relaxed);
    driver
        .pipe(CLINICIANS, Some(key.to_string().as_bytes()), None)
        .expect("ok");

    delete_binary(&mut driver, "u1");
    assert!(driver.read_output(CLINICIAN_DELETIONS).is_empty());
    assert!(driver.dead_letters().is_empty());
}

#[test]
fn a_debezium_user_table_delete_deletes_the_user_and_other_ops_are_ignored() {
    let mut driver = driver();
    let (clinic, id) = (ObjectId::new(), ObjectId::new());
    insert(
        &mut driver,
        PATIENTS,
        &patient(id, clinic, "kc-1", doc! { "view": {} }),
    );
    let update = json!({"schema": {"type": "struct"}, "payload": {"before": null, "after": {"id": "kc-1"}, "op": "u", "ts_ms": 1}});
    driver
        .pipe(USER_TABLE, None, Some(update.to_string().as_bytes()))
        .expect("ok");
    assert!(driver.read_output(PATIENT_DELETIONS).is_empty());

    let delete = json!({"before": {"id": "kc-1", "email": "x@y.z"}, "after": null, "op": "d", "ts_ms": 1_795_000_000_000_i64});
    driver
        .pipe(
            USER_TABLE,
            Some(br#"{"id":"kc-1"}"#),
            Some(delete.to_string().as_bytes()),
        )
        .expect("ok");
    let archived = archives(&driver.read_output(PATIENT_DELETIONS));
    assert_eq!(archived.len(), 1);
    assert_eq!(
        archived[0].get_datetime("deletedTime"),
        Ok(&DateTime::from_millis(1_795_000_000_000))
    );
    // The Debezium tombstone after the delete is ignored.
    driver
        .pipe(USER_TABLE, Some(br#"{"id":"kc-1"}"#), None)
        .expect("ok");
    assert!(driver.dead_letters().is_empty());
}

#[test]
fn other_event_types_are_ignored_and_malformed_events_go_to_the_dlq() {
    let mut driver = driver();
    let (clinic, id) = (ObjectId::new(), ObjectId::new());
    insert(
        &mut driver,
        PATIENTS,
        &patient(id, clinic, "u1", doc! { "view": {} }),
    );
    let update = json!({"original": {"userid": "u1"}, "updated": {"userid": "u1"}});
    driver
        .pipe_with_headers(
            USER_EVENTS,
            None,
            Some(update.to_string().as_bytes()),
            &[("ce_specversion", b"1.0"), ("ce_type", b"users:update")],
        )
        .expect("ok");
    assert!(driver.dead_letters().is_empty());

    // Not JSON; JSON but no CloudEvent; a delete naming no user; a change without _id.
    driver.pipe(USER_EVENTS, None, Some(b"{oops")).expect("ok");
    driver
        .pipe(USER_EVENTS, None, Some(br#"{"userid":"u1"}"#))
        .expect("ok");
    driver
        .pipe_with_headers(
            USER_EVENTS,
            None,
            Some(br#"{"username":"x"}"#),
            &[("ce_specversion", b"1.0"), ("ce_type", b"users:delete")],
        )
        .expect("ok");
    let mut no_id = change(
        Operation::Insert,
        "patients",
        ObjectId::new(),
        Some(doc! {}),
    );
    no_id.document_key = doc! {};
    pipe(&mut driver, PATIENTS, &no_id);

    assert_eq!(driver.dead_letters().len(), 4);
    assert_eq!(
        driver.dead_letters()[2].header("clinic.error.processor"),
        Some("deletions")
    );
    assert!(driver.read_output(PATIENT_DELETIONS).is_empty());
    // The processor carries on: the user is still there to delete.
    delete_binary(&mut driver, "u1");
    assert_eq!(driver.read_output(PATIENT_DELETIONS).len(), 1);
}

/// A structured-mode `users:update` of `user` from `before` to `after` (usernames).
fn update_username(driver: &mut TestDriver<Deletions>, user: &str, before: &str, after: &str) {
    let event = json!({
        "specversion": "1.0", "type": "users:update", "id": format!("u-{after}"), "source": "shoreline",
        "time": DELETED_AT, "datacontenttype": "application/json",
        "data": { "original": { "userid": user, "username": before },
                  "updated": { "userid": user, "username": after } },
    });
    driver
        .pipe_with_headers(
            USER_EVENTS,
            Some(user.as_bytes()),
            Some(event.to_string().as_bytes()),
            &[("content-type", b"application/cloudevents+json")],
        )
        .expect("no fatal error");
}

#[test]
fn a_changed_username_reaches_the_users_records_except_a_clinicians_address_taken_in_its_clinic() {
    let mut driver = driver();
    let (a, b) = (ObjectId::new(), ObjectId::new());
    let (p1, c1, c2, c3) = (
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
        ObjectId::new(),
    );
    insert(
        &mut driver,
        PATIENTS,
        &patient(p1, a, "u1", doc! { "view": {} }),
    );
    insert(
        &mut driver,
        CLINICIANS,
        &clinician(c1, a, Some("u1"), &["CLINIC_MEMBER"]),
    );
    insert(
        &mut driver,
        CLINICIANS,
        &clinician(c2, b, Some("u1"), &["CLINIC_MEMBER"]),
    );
    // In clinic b, a pending invite already has the new address.
    let mut invite = clinician(c3, b, None, &["CLINIC_MEMBER"]);
    invite.insert("email", "new@example.org");
    insert(&mut driver, CLINICIANS, &invite);

    // The same username (another field changed): nothing.
    update_username(&mut driver, "u1", "c@example.org", "C@Example.org");
    assert!(driver.read_output(SINK_PATIENTS).is_empty());
    update_username(&mut driver, "u1", "c@example.org", " New@Example.org ");
    let at = DateTime::from_millis(DELETED_MS);
    assert_eq!(
        archives(&driver.read_output(SINK_PATIENTS)),
        vec![doc! { "_id": p1, "email": "new@example.org", "updatedTime": at }]
    );
    assert_eq!(
        archives(&driver.read_output(SINK_CLINICIANS)),
        vec![doc! { "_id": c1, "email": "new@example.org", "updatedTime": at }],
        "c2 keeps its address: the invite in its clinic has the new one"
    );
    // The table took the address: a later deletion archives the record as it is now.
    delete_binary(&mut driver, "u1");
    let archived = archives(&driver.read_output(PATIENT_DELETIONS));
    assert_eq!(
        archived[0]
            .get_document("patient")
            .expect("patient")
            .get_str("email"),
        Ok("new@example.org")
    );
    assert!(driver.dead_letters().is_empty());
}
