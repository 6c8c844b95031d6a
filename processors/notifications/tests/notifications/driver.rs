//! Every trigger and non-trigger of the processor through the test driver, with change events in
//! the double-encoded JSON form Tidepool's connectors write: what goes to the outbox (template,
//! recipient, variables, id), what waits, what is dead-lettered.

use std::collections::BTreeMap;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{DateTime, Document, doc};
use clinic::cdc::{ChangeEvent, Encoding, Envelope, Format, Operation};
use clinic::email::EmailRequest;
use clinic::streams::OutValue;
use clinic::streams::driver::TestDriver;
use clinic::testkit::change;
use clinic_notifications::config::Inputs;
use clinic_notifications::model::Outgoing;
use clinic_notifications::processor::{
    CLINICIANS, CLINICS, Notifications, OUTBOX, PARKED, PATIENT_INVITES, PATIENTS, USER_EVENTS,
};
use serde_json::json;

/// The driver's "now": 2026-11-30T12:00:00Z.
const NOW_MS: i64 = 1_795_953_600_000;

struct Harness {
    driver: TestDriver<Notifications>,
}

fn oid(n: u32) -> ObjectId {
    ObjectId::parse_str(format!("65a1b2c3{n:016x}")).expect("hex")
}

impl Harness {
    fn new() -> Self {
        Self {
            driver: TestDriver::new(Self::processor()),
        }
    }

    /// The processor under test: JSON change events, user events read, the clock at `NOW_MS`.
    fn processor() -> Notifications {
        Self::processor_at(NOW_MS)
    }

    /// The same with the clock at `now_ms`.
    fn processor_at(now_ms: i64) -> Notifications {
        let json = Format {
            envelope: Envelope::MongoChangeStream,
            encoding: Encoding::Json,
        };
        let inputs = Inputs {
            clinics: json,
            clinicians: json,
            patients: json,
            patient_invites: json,
            user_events: true,
        };
        Notifications::new(inputs, Duration::from_secs(24 * 3600)).with_clock(move || now_ms)
    }

    fn pipe(&mut self, topic: &str, mut change: ChangeEvent, at_ms: i64) {
        change.source.wall_time = Some(DateTime::from_millis(at_ms));
        self.driver
            .pipe_tidepool_json(topic, &change)
            .expect("no fatal error");
    }

    fn insert(&mut self, topic: &str, document: Document) {
        let id = document.get("_id").cloned().expect("_id");
        let coll = topic.split('.').nth(1).expect("db.coll");
        self.pipe(
            topic,
            change(Operation::Insert, coll, id, Some(document)),
            NOW_MS - 1_000,
        );
    }

    fn update(&mut self, topic: &str, full: Document, updated: Document, at_ms: i64) {
        let id = full.get("_id").cloned().expect("_id");
        let coll = topic.split('.').nth(1).expect("db.coll");
        let mut event = change(Operation::Update, coll, id, Some(full));
        event.updated_fields = updated;
        // A distinct resume token per change, as the source connector's.
        event.source.resume_token = Some(doc! { "_data": format!("update-{at_ms}") });
        self.pipe(topic, event, at_ms);
    }

    fn replace(&mut self, topic: &str, full: Document, at_ms: i64) {
        let id = full.get("_id").cloned().expect("_id");
        let coll = topic.split('.').nth(1).expect("db.coll");
        let mut event = change(Operation::Replace, coll, id, Some(full));
        event.source.resume_token = Some(doc! { "_data": format!("replace-{at_ms}") });
        self.pipe(topic, event, at_ms);
    }

    fn sent(&mut self) -> Vec<Outgoing> {
        self.driver
            .read_output(OUTBOX)
            .into_iter()
            .map(|record| {
                let Some(OutValue::Json(value)) = record.value else {
                    panic!("a JSON request expected")
                };
                let outgoing: Outgoing = serde_json::from_value(value).expect("an outgoing email");
                assert_eq!(record.key, outgoing.id);
                outgoing
            })
            .collect()
    }

    fn user_created(&mut self, user: &str, username: &str) {
        let event = json!({
            "specversion": "1.0", "type": "users:create", "id": format!("c-{user}"),
            "source": "shoreline", "data": { "userid": user, "username": username },
        });
        self.driver
            .pipe(
                USER_EVENTS,
                Some(user.as_bytes()),
                Some(event.to_string().as_bytes()),
            )
            .expect("no fatal error");
    }

    fn request(&mut self, request: &EmailRequest) {
        self.driver
            .pipe_avro(clinic::email::REQUESTS_TOPIC, None, Some(request.to_avro()))
            .expect("no fatal error");
    }
}

fn clinic_doc(id: ObjectId, admins: &[&str]) -> Document {
    doc! { "_id": id, "name": "Riverside Diabetes Clinic", "admins": admins }
}

fn clinician_doc(id: ObjectId, clinic: ObjectId, user: &str, name: &str) -> Document {
    doc! {
        "_id": id, "clinicId": clinic, "userId": user, "name": name,
        "email": format!("{user}@example.org"), "roles": ["CLINIC_MEMBER"],
    }
}

/// Sam Lee, a custodial patient of `clinic` with an address.
fn custodial_patient(clinic: ObjectId) -> Document {
    doc! {
        "_id": oid(20), "clinicId": clinic, "userId": "patient1", "fullName": "Sam Lee",
        "email": "sam@example.org", "permissions": { "custodian": {} },
    }
}

fn variables(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn clinic_created_goes_to_the_first_admin_even_when_their_record_comes_second() {
    let mut h = Harness::new();
    let (clinic, other) = (oid(1), oid(2));
    // As the API writes it: the clinic, then its admin's clinician record.
    h.insert(CLINICS, clinic_doc(clinic, &["admin1"]));
    assert!(h.sent().is_empty());
    assert_eq!(h.driver.store(PARKED).len(), 1);
    h.insert(
        CLINICIANS,
        clinician_doc(oid(11), clinic, "admin1", "Dr. Ana Ortiz"),
    );
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].template, "clinic_created");
    assert_eq!(sent[0].to, "admin1@example.org");
    assert_eq!(
        sent[0].variables,
        variables(&[("ClinicName", "Riverside Diabetes Clinic")])
    );
    assert!(sent[0].id.starts_with("clinic_created:"));
    assert!(h.driver.store(PARKED).is_empty());

    // Record first, clinic second: sent at once. An address from user events works too.
    h.user_created("admin2", "second.admin@example.org");
    h.insert(CLINICS, clinic_doc(other, &["admin2"]));
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "second.admin@example.org");
    assert_ne!(sent[0].id, format!("{}", oid(1)));
}

#[test]
fn a_clinic_without_a_name_or_admins_and_clinic_updates_send_nothing() {
    let mut h = Harness::new();
    h.insert(CLINICS, doc! { "_id": oid(1), "admins": ["admin1"] });
    h.insert(
        CLINICS,
        doc! { "_id": oid(2), "name": "No Admins", "admins": [] },
    );
    h.insert(CLINICIANS, clinician_doc(oid(11), oid(3), "admin3", "Ana"));
    h.update(
        CLINICS,
        clinic_doc(oid(3), &["admin3"]),
        doc! { "name": "Riverside Diabetes Clinic" },
        NOW_MS,
    );
    assert!(h.sent().is_empty());
    assert!(h.driver.store(PARKED).is_empty());
    assert!(h.driver.dead_letters().is_empty());
}

#[test]
fn a_roles_change_mails_the_clinician_in_both_forms_and_other_updates_do_not() {
    let mut h = Harness::new();
    let clinic = oid(1);
    h.insert(
        CLINICIANS,
        clinician_doc(oid(10), clinic, "admin1", "Dr. Ana Ortiz"),
    );
    h.insert(CLINICS, clinic_doc(clinic, &["admin1"]));
    h.sent();
    let member = clinician_doc(oid(11), clinic, "member1", "Sam Clinician");
    h.insert(CLINICIANS, member.clone());

    // The array set as a whole (its first roles change).
    let update = doc! { "roles": ["CLINIC_ADMIN"], "updatedBy": "admin1" };
    h.update(
        CLINICIANS,
        member.clone(),
        doc! { "roles": ["CLINIC_ADMIN"], "rolesUpdates": [update] },
        NOW_MS - 10,
    );
    // Appended to, as MongoDB reports a `$push` to an existing array; by an unknown updater.
    h.update(
        CLINICIANS,
        member.clone(),
        doc! { "roles": ["CLINIC_MEMBER"], "rolesUpdates.1": { "roles": ["CLINIC_MEMBER"], "updatedBy": "gone" } },
        NOW_MS - 5,
    );
    // A name change touches no roles.
    h.update(CLINICIANS, member, doc! { "name": "Sam C." }, NOW_MS);
    let sent = h.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent.iter()
            .all(|s| s.template == "clinician_permissions_updated")
    );
    assert!(sent.iter().all(|s| s.to == "member1@example.org"));
    assert_eq!(
        sent[0].variables,
        variables(&[
            ("ClinicName", "Riverside Diabetes Clinic"),
            ("ClinicianName", "Dr. Ana Ortiz")
        ])
    );
    assert_eq!(sent[1].variables["ClinicianName"], "Clinic administrator");
    assert_ne!(sent[0].id, sent[1].id);
}

#[test]
fn custodial_inserts_with_an_address_and_upload_reminders_mail_the_patient() {
    let mut h = Harness::new();
    let clinic = oid(1);
    h.insert(
        CLINICS,
        doc! { "_id": clinic, "name": "Riverside Diabetes Clinic" },
    );
    let custodial = doc! {
        "_id": oid(20), "clinicId": clinic, "userId": "patient1", "fullName": "Sam Lee",
        "email": "sam@example.org", "permissions": { "custodian": {}, "view": {} },
    };
    h.insert(PATIENTS, custodial.clone());
    // Not custodial; custodial without an address.
    h.insert(
        PATIENTS,
        doc! { "_id": oid(21), "clinicId": clinic, "userId": "patient2", "email": "p2@example.org", "permissions": { "view": {} } },
    );
    h.insert(
        PATIENTS,
        doc! { "_id": oid(22), "clinicId": clinic, "userId": "patient3", "permissions": { "custodian": {} } },
    );
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].template, "custodial_account_created");
    assert_eq!(sent[0].to, "sam@example.org");
    assert_eq!(
        sent[0].variables,
        variables(&[
            ("ClinicName", "Riverside Diabetes Clinic"),
            ("PatientName", "Sam Lee"),
            ("ClinicId", &clinic.to_hex()),
            ("UserId", "patient1"),
        ])
    );

    h.update(
        PATIENTS,
        custodial.clone(),
        doc! { "lastUploadReminderTime": DateTime::from_millis(NOW_MS - 100) },
        NOW_MS - 100,
    );
    h.update(
        PATIENTS,
        custodial,
        doc! { "fullName": "Sam M. Lee" },
        NOW_MS,
    );
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].template, "patient_upload_reminder");
    assert_eq!(sent[0].to, "sam@example.org");
}

#[test]
fn a_replace_that_changes_the_reminder_time_mails_the_reminder_and_one_that_keeps_it_does_not() {
    let mut h = Harness::new();
    let clinic = oid(1);
    h.insert(
        CLINICS,
        doc! { "_id": clinic, "name": "Riverside Diabetes Clinic" },
    );
    let patient = doc! {
        "_id": oid(30), "clinicId": clinic, "userId": "patient4", "fullName": "Ada Kim",
        "email": "ada@example.org", "permissions": { "view": {} },
    };
    h.insert(PATIENTS, patient.clone());
    let mut reminded = patient.clone();
    reminded.insert(
        "lastUploadReminderTime",
        DateTime::from_millis(NOW_MS - 200),
    );
    h.replace(PATIENTS, reminded.clone(), NOW_MS - 200);
    // The same reminder time again (another field replaced): no second email.
    reminded.insert("fullName", "Ada J. Kim");
    h.replace(PATIENTS, reminded, NOW_MS - 100);
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].template, "patient_upload_reminder");
    assert_eq!(sent[0].to, "ada@example.org");
}

#[test]
fn an_invite_mails_every_admin_unless_the_clinic_suppressed_it() {
    let mut h = Harness::new();
    let (open, quiet) = (oid(1), oid(2));
    for (n, user) in [(10, "admin1"), (11, "admin2")] {
        h.insert(CLINICIANS, clinician_doc(oid(n), open, user, user));
    }
    h.insert(
        CLINICIANS,
        clinician_doc(oid(12), quiet, "admin3", "admin3"),
    );
    h.insert(CLINICS, clinic_doc(open, &["admin1", "admin2"]));
    let mut suppressed = clinic_doc(quiet, &["admin3"]);
    suppressed.insert(
        "suppressedNotifications",
        doc! { "patientClinicInvitation": true },
    );
    h.insert(CLINICS, suppressed);
    h.sent();
    for (key, clinic) in [("invite1", open), ("invite2", quiet)] {
        h.insert(
            PATIENT_INVITES,
            doc! {
                "_id": key, "key": key, "clinicId": clinic, "creatorId": "patient9",
                "profile": { "fullName": "Kim Park", "birthDate": "2010-05-06" },
            },
        );
    }
    let sent = h.sent();
    let recipients: Vec<&str> = sent.iter().map(|s| s.to.as_str()).collect();
    assert_eq!(recipients, ["admin1@example.org", "admin2@example.org"]);
    assert!(
        sent.iter()
            .all(|s| s.template == "patient_clinic_invitation"
                && s.variables["PatientName"] == "Kim Park")
    );
}

#[test]
fn a_clinician_invite_mails_the_invitee_once_and_its_acceptance_does_not() {
    let mut h = Harness::new();
    let clinic = oid(1);
    let invite = doc! {
        "_id": oid(30), "clinicId": clinic, "inviteId": "k0123456789abcdef0123456789abcde",
        "email": "new.doc@example.org", "roles": ["CLINIC_MEMBER"],
    };
    // The invite comes before its clinic: it waits for the clinic's name.
    h.insert(CLINICIANS, invite.clone());
    assert!(h.sent().is_empty());
    h.insert(CLINICS, clinic_doc(clinic, &["admin1"]));
    let sent: Vec<Outgoing> = h
        .sent()
        .into_iter()
        .filter(|s| s.template == "clinician_invitation")
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, "new.doc@example.org");
    assert_eq!(
        sent[0].variables,
        variables(&[
            ("ClinicName", "Riverside Diabetes Clinic"),
            ("ClinicId", &clinic.to_hex()),
            ("InviteId", "k0123456789abcdef0123456789abcde"),
        ])
    );
    // Accepted: the placeholder gets a user and loses its invite id; no email.
    let mut accepted = invite.clone();
    accepted.remove("inviteId");
    accepted.insert("userId", "user77");
    h.update(
        CLINICIANS,
        accepted,
        doc! { "userId": "user77" },
        NOW_MS - 500,
    );
    // A member's insert and an invite without an address send nothing either.
    h.insert(
        CLINICIANS,
        clinician_doc(oid(31), clinic, "user78", "Dr. B"),
    );
    h.insert(
        CLINICIANS,
        doc! { "_id": oid(32), "clinicId": clinic, "inviteId": "other", "roles": ["CLINIC_MEMBER"] },
    );
    assert!(h.sent().is_empty());
}

#[test]
fn a_re_snapshot_by_copy_existing_fills_the_tables_and_mails_nobody() {
    let mut h = Harness::new();
    let clinic = oid(1);
    let patient = custodial_patient(clinic);
    let invite = doc! {
        "_id": oid(30), "clinicId": clinic, "inviteId": "k1", "email": "new.doc@example.org",
        "roles": ["CLINIC_MEMBER"],
    };
    // A source connector re-created with `copy.existing`: every document again as its copy (an
    // insert marked `_id.copyingData`, no wallTime, a record time of now).
    for (topic, coll, document) in [
        (CLINICS, "clinics", clinic_doc(clinic, &["admin1"])),
        (
            CLINICIANS,
            "clinicians",
            clinician_doc(oid(10), clinic, "admin1", "Dr. A"),
        ),
        (CLINICIANS, "clinicians", invite),
        (PATIENTS, "patients", patient.clone()),
    ] {
        let id = document.get("_id").cloned().expect("_id");
        let copy = change(Operation::Snapshot, coll, id, Some(document));
        h.driver
            .pipe_tidepool_json(topic, &copy)
            .expect("no fatal error");
    }
    assert!(h.sent().is_empty());
    // The tables took the copies: a reminder afterwards reaches the patient.
    h.update(
        PATIENTS,
        patient,
        doc! { "lastUploadReminderTime": DateTime::from_millis(NOW_MS - 2_000) },
        NOW_MS - 1_000,
    );
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].template, "patient_upload_reminder");
    assert_eq!(sent[0].to, "sam@example.org");
}

#[test]
fn a_custodial_patients_address_added_or_changed_later_gets_the_account_email_there() {
    let mut h = Harness::new();
    let clinic = oid(1);
    h.insert(CLINICS, clinic_doc(clinic, &["admin1"]));
    let mut patient = custodial_patient(clinic);
    patient.remove("email");
    h.insert(PATIENTS, patient.clone());
    assert!(h.sent().is_empty(), "no address yet");
    let recipients = |h: &mut Harness| -> Vec<(String, String)> {
        h.sent().into_iter().map(|s| (s.template, s.to)).collect()
    };
    for (n, address) in ["first@example.org", "second@example.org"]
        .into_iter()
        .enumerate()
    {
        patient.insert("email", address);
        h.update(
            PATIENTS,
            patient.clone(),
            doc! { "email": address },
            NOW_MS - 900 + i64::try_from(n).expect("small"),
        );
        assert_eq!(
            recipients(&mut h),
            [("custodial_account_created".to_owned(), address.to_owned())]
        );
    }
    // Another field: nothing; a claimed (no longer custodial) patient's new address: nothing.
    patient.insert("fullName", "Sam L.");
    h.update(
        PATIENTS,
        patient.clone(),
        doc! { "fullName": "Sam L." },
        NOW_MS - 800,
    );
    patient.insert("permissions", doc! { "view": {} });
    patient.insert("email", "third@example.org");
    h.replace(PATIENTS, patient, NOW_MS - 700);
    assert!(h.sent().is_empty());
}

#[test]
fn old_changes_update_the_tables_but_send_nothing() {
    let mut h = Harness::new();
    let clinic = oid(1);
    let day_and_a_bit = 25 * 3600 * 1000;
    let admin = clinician_doc(oid(10), clinic, "admin1", "Dr. Ana Ortiz");
    h.pipe(
        CLINICIANS,
        change(Operation::Insert, "clinicians", oid(10), Some(admin)),
        NOW_MS - day_and_a_bit,
    );
    h.pipe(
        CLINICS,
        change(
            Operation::Insert,
            "clinics",
            clinic,
            Some(clinic_doc(clinic, &["admin1"])),
        ),
        NOW_MS - day_and_a_bit,
    );
    assert!(h.sent().is_empty());
    // The tables kept what the old changes said: a fresh invite finds the clinic and its admin.
    h.insert(
        PATIENT_INVITES,
        doc! { "_id": "invite1", "clinicId": clinic, "profile": { "fullName": "Kim Park" } },
    );
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "admin1@example.org");
    assert_eq!(sent[0].variables["ClinicName"], "Riverside Diabetes Clinic");
}

#[test]
fn the_same_change_twice_makes_the_same_id() {
    let mut h = Harness::new();
    let clinic = oid(1);
    h.insert(CLINICIANS, clinician_doc(oid(10), clinic, "admin1", "Ana"));
    h.insert(CLINICS, clinic_doc(clinic, &["admin1"]));
    // A connector that delivers a change twice (at-least-once) delivers the same resume token.
    h.insert(CLINICS, clinic_doc(clinic, &["admin1"]));
    let sent = h.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].id, sent[1].id);
}

#[test]
fn requests_pass_with_their_ids_and_bad_ones_are_dead_lettered() {
    let mut h = Harness::new();
    h.user_created("legacy1", "lou.ward@example.org");
    let request =
        |id: &str, template: &str, email: Option<&str>, user: Option<&str>| EmailRequest {
            id: id.into(),
            template: template.into(),
            recipient_email: email.map(str::to_owned),
            recipient_user_id: user.map(str::to_owned),
            variables: variables(&[
                ("ClinicName", "Riverside"),
                ("LegacyClinicianName", "Dr. Lou Ward"),
            ]),
            requested_ms: NOW_MS - 1_000,
        };
    h.request(&request(
        "migration:1:migrate_patient:p1",
        "migrate_patient",
        Some("p1@example.org"),
        None,
    ));
    h.request(&request(
        "migration:1:clinic_migration_complete:legacy1",
        "clinic_migration_complete",
        None,
        Some("legacy1"),
    ));
    h.request(&request(
        "x:1",
        "no_such_template",
        Some("p1@example.org"),
        None,
    ));
    h.request(&request("x:2", "migrate_patient", None, Some("stranger")));
    let mut old = request("x:3", "migrate_patient", Some("p1@example.org"), None);
    old.requested_ms = NOW_MS - 48 * 3600 * 1000;
    h.request(&old);
    let sent = h.sent();
    let summary: Vec<(&str, &str)> = sent
        .iter()
        .map(|s| (s.id.as_str(), s.to.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("migration:1:migrate_patient:p1", "p1@example.org"),
            (
                "migration:1:clinic_migration_complete:legacy1",
                "lou.ward@example.org"
            ),
        ]
    );
    let reasons: Vec<String> = h
        .driver
        .dead_letters()
        .iter()
        .map(|d| {
            d.headers
                .iter()
                .find(|(k, _)| k.contains("message"))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("unknown template"), "{reasons:?}");
    assert!(reasons[1].contains("no address"), "{reasons:?}");
}

#[test]
fn malformed_changes_are_dead_lettered_and_processing_goes_on() {
    let mut h = Harness::new();
    h.insert(
        CLINICS,
        doc! { "_id": oid(1), "name": 42, "admins": ["admin1"] },
    );
    h.insert(PATIENT_INVITES, doc! { "_id": "invite1", "profile": {} });
    assert_eq!(h.driver.dead_letters().len(), 2);
    h.insert(CLINICIANS, clinician_doc(oid(10), oid(2), "admin1", "Ana"));
    h.insert(CLINICS, clinic_doc(oid(2), &["admin1"]));
    assert_eq!(h.sent().len(), 1);
}

#[test]
fn emails_whose_clinic_or_admin_comes_later_wait_for_them() {
    let mut h = Harness::new();
    let clinic = oid(1);
    // Read before the clinic: a custodial patient, and an invite (whose admins are not known).
    h.insert(PATIENTS, custodial_patient(clinic));
    h.insert(
        PATIENT_INVITES,
        doc! { "_id": "invite1", "clinicId": clinic, "profile": { "fullName": "Kim Park" } },
    );
    assert!(h.sent().is_empty());
    assert_eq!(h.driver.store(PARKED).len(), 2);
    // The clinic: the patient's email goes, and clinic_created and the invitation now wait
    // for the admin's address.
    h.insert(CLINICS, clinic_doc(clinic, &["admin1"]));
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].template, "custodial_account_created");
    assert_eq!(sent[0].variables["ClinicName"], "Riverside Diabetes Clinic");
    assert_eq!(h.driver.store(PARKED).len(), 2);
    h.insert(CLINICIANS, clinician_doc(oid(10), clinic, "admin1", "Ana"));
    let mut templates: Vec<(String, String)> =
        h.sent().into_iter().map(|s| (s.template, s.to)).collect();
    templates.sort();
    assert_eq!(
        templates,
        [
            ("clinic_created".to_owned(), "admin1@example.org".to_owned()),
            (
                "patient_clinic_invitation".to_owned(),
                "admin1@example.org".to_owned()
            ),
        ]
    );
    assert!(h.driver.store(PARKED).is_empty());
    // Nothing is left to send twice.
    h.insert(CLINICIANS, clinician_doc(oid(10), clinic, "admin1", "Ana"));
    assert!(h.sent().is_empty());
}

#[test]
fn a_restarted_task_sends_what_a_global_table_brought_while_it_was_down() {
    let mut h = Harness::new();
    let clinic = oid(1);
    h.insert(CLINICIANS, clinician_doc(oid(10), clinic, "admin1", "Ana"));
    h.insert(PATIENTS, custodial_patient(clinic));
    assert_eq!(h.driver.store(PARKED).len(), 1);
    // The instance crashes; its global tables keep reading (another instance, or this one
    // after the restart, reads the clinic), but no task hears of it.
    h.driver.stop_task();
    h.insert(CLINICS, clinic_doc(clinic, &["admin1"]));
    assert!(h.sent().is_empty());
    h.driver
        .restart_task(Harness::processor())
        .expect("restarted");
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].template, "custodial_account_created");
    assert_eq!(sent[0].variables["ClinicName"], "Riverside Diabetes Clinic");
    assert!(h.driver.store(PARKED).is_empty());
    // Nothing that was sent before the restart, or that still waits, is sent again.
    h.driver
        .restart_task(Harness::processor())
        .expect("restarted");
    assert!(h.sent().is_empty());
}

#[test]
fn a_roles_change_without_its_document_uses_the_table_and_skips_a_clinician_nobody_knows() {
    let mut h = Harness::new();
    let clinic = oid(1);
    h.insert(CLINICS, clinic_doc(clinic, &["admin1"]));
    h.insert(
        CLINICIANS,
        clinician_doc(oid(10), clinic, "admin1", "Dr. Ana Ortiz"),
    );
    h.insert(CLINICIANS, clinician_doc(oid(11), clinic, "member1", "Sam"));
    h.sent();
    let roles = doc! { "rolesUpdates.0": { "roles": ["CLINIC_ADMIN"], "updatedBy": "admin1" } };
    // No fullDocument (the connector's lookup found the document gone, or a producer without
    // updateLookup): the global table's record names the recipient.
    let mut event = change(Operation::Update, "clinicians", oid(11), None);
    event.updated_fields = roles.clone();
    event.source.resume_token = Some(doc! { "_data": "no-full-document" });
    h.pipe(CLINICIANS, event, NOW_MS - 1_000);
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, "member1@example.org");
    assert_eq!(sent[0].variables["ClinicianName"], "Dr. Ana Ortiz");
    // A clinician neither the change nor the table describes: nothing to send, nothing poison.
    let mut event = change(Operation::Update, "clinicians", oid(12), None);
    event.updated_fields = roles;
    h.pipe(CLINICIANS, event, NOW_MS - 1_000);
    assert!(h.sent().is_empty());
    assert!(h.driver.dead_letters().is_empty());
}

#[test]
fn a_parked_email_whose_clinic_does_not_come_within_max_age_is_dropped() {
    let mut h = Harness::new();
    let clinic = oid(1);
    h.insert(PATIENTS, custodial_patient(clinic));
    assert_eq!(h.driver.store(PARKED).len(), 1);
    // A day and an hour later the task restarts: the email is dropped, not kept for ever.
    h.driver
        .restart_task(Harness::processor_at(NOW_MS + 25 * 3600 * 1000))
        .expect("restarted");
    assert!(h.driver.store(PARKED).is_empty());
    h.insert(CLINICS, clinic_doc(clinic, &["admin1"]));
    assert!(h.sent().is_empty());
}
