//! The authorisation matrix: every implemented operation × every kind of caller (no token,
//! another user, a member, an admin, the clinic's patient, a backend service) answers as the
//! contract's model says: 401 without a token, 403 where not allowed, and otherwise not a
//! 401/403 (the operation's own answer). Each cell runs on a fresh clinic, so one cell's
//! writes never decide another's answer.

use bson::doc;
use bson::oid::ObjectId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{TestApi, service, user};

/// A clinic with an admin, a member, a patient, a pending migration and a pending invite.
struct Fixture {
    clinic: String,
    share_code: String,
    admin: String,
    member: String,
    patient: String,
    stranger: String,
    invite: String,
    clinician_invite: String,
    tag: String,
    site: String,
    legacy: String,
}

async fn fixture(api: &TestApi) -> Fixture {
    let (admin, member, patient, stranger, legacy) = (user(), user(), user(), user(), user());
    let (_, clinic) = api
        .call(
            Method::POST,
            "/v1/clinics",
            Some(&TestApi::token(&admin, false)),
            Some(json!({ "name": "Matrix" })),
        )
        .await;
    let id = clinic["id"].as_str().expect("id").to_owned();
    let oid = ObjectId::parse_str(&id).expect("oid");
    api.call(Method::POST, &format!("/v1/clinics/{id}/clinicians"), Some(&service()), Some(json!({ "id": member, "email": format!("{member}@example.org"), "roles": ["CLINIC_MEMBER"] })))
        .await;
    api.call(Method::POST, &format!("/v1/clinics/{id}/patients/{patient}"), Some(&service()), Some(json!({ "permissions": { "view": {}, "upload": {} }, "fullName": "Pat", "birthDate": "2000-01-01" })))
        .await;
    api.db
        .collection::<bson::Document>("clinics")
        .update_one(doc! { "_id": oid }, doc! { "$set": { "isMigrated": true } })
        .await
        .expect("migrated");
    let now = bson::DateTime::now();
    api.db
        .collection::<bson::Document>("migrations")
        .insert_one(doc! { "clinicId": oid, "userId": &legacy, "status": "PENDING", "createdTime": now, "updatedTime": now })
        .await
        .expect("migration");
    let invite = uuid::Uuid::new_v4().simple().to_string();
    api.db
        .collection::<bson::Document>("patient_invites")
        .insert_one(doc! { "_id": &invite, "key": &invite, "type": "careteam_invitation", "status": "pending", "clinicId": oid, "creatorId": user(),
                            "pendingFor": user(), "permissions": { "view": {} }, "profile": { "fullName": "Inv", "birthDate": "2001-01-01" }, "created": now, "modified": now })
        .await
        .expect("invite");
    let clinician_invite = uuid::Uuid::new_v4().simple().to_string();
    api.invite_clinician(&id, &clinician_invite).await;
    let tag = api.add_tag(&id, "Matrix").await;
    let site = api.add_site(&id, "Matrix Site").await;
    Fixture {
        clinic: id,
        share_code: clinic["shareCode"].as_str().expect("code").to_owned(),
        admin,
        member,
        patient,
        stranger,
        invite,
        clinician_invite,
        tag,
        site,
        legacy,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Nobody,
    Stranger,
    Member,
    Admin,
    Patient,
    Service,
}

const CALLERS: [Who; 6] = [
    Who::Nobody,
    Who::Stranger,
    Who::Member,
    Who::Admin,
    Who::Patient,
    Who::Service,
];

/// One operation: how to call it on a fixture, and who may (`A`) or may not (`F`), in the order
/// stranger, member, admin, patient, service (nobody is always 401).
struct Operation {
    name: &'static str,
    method: Method,
    path: fn(&Fixture) -> String,
    body: fn(&Fixture) -> Option<Value>,
    allowed: &'static str,
}

fn none(_: &Fixture) -> Option<Value> {
    None
}

fn operations() -> Vec<Operation> {
    vec![
        Operation {
            name: "ListClinics",
            method: Method::GET,
            path: |_| "/v1/clinics".into(),
            body: none,
            allowed: "FFFFA",
        },
        Operation {
            name: "CreateClinic",
            method: Method::POST,
            path: |_| "/v1/clinics".into(),
            body: |_| Some(json!({ "name": "New" })),
            allowed: "AAAAF",
        },
        Operation {
            name: "GetClinic",
            method: Method::GET,
            path: |f| format!("/v1/clinics/{}", f.clinic),
            body: none,
            allowed: "AAAAA",
        },
        Operation {
            name: "GetClinicByShareCode",
            method: Method::GET,
            path: |f| format!("/v1/clinics/share_code/{}", f.share_code),
            body: none,
            allowed: "AAAAA",
        },
        Operation {
            name: "UpdateClinic",
            method: Method::PUT,
            path: |f| format!("/v1/clinics/{}", f.clinic),
            body: |_| Some(json!({ "city": "X" })),
            allowed: "FFAFA",
        },
        Operation {
            name: "DeleteClinic",
            method: Method::DELETE,
            path: |f| format!("/v1/clinics/{}", f.clinic),
            body: none,
            allowed: "FFAFF",
        },
        Operation {
            name: "ListClinicians",
            method: Method::GET,
            path: |f| format!("/v1/clinics/{}/clinicians", f.clinic),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "CreateClinician",
            method: Method::POST,
            path: |f| format!("/v1/clinics/{}/clinicians", f.clinic),
            body: |_| {
                Some(
                    json!({ "id": user(), "email": format!("{}@example.org", user()), "roles": ["CLINIC_MEMBER"] }),
                )
            },
            allowed: "FFFFA",
        },
        Operation {
            name: "GetClinician",
            method: Method::GET,
            path: |f| format!("/v1/clinics/{}/clinicians/{}", f.clinic, f.admin),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "UpdateClinician",
            method: Method::PUT,
            path: |f| format!("/v1/clinics/{}/clinicians/{}", f.clinic, f.member),
            body: |_| Some(json!({ "name": "M" })),
            allowed: "FFAFA",
        },
        Operation {
            name: "DeleteClinician (the member)",
            method: Method::DELETE,
            path: |f| format!("/v1/clinics/{}/clinicians/{}", f.clinic, f.member),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "ListClinicsForClinician (the member)",
            method: Method::GET,
            path: |f| format!("/v1/clinicians/{}/clinics", f.member),
            body: none,
            allowed: "FAFFA",
        },
        Operation {
            name: "ListPatients",
            method: Method::GET,
            path: |f| format!("/v1/clinics/{}/patients", f.clinic),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "CreatePatientAccount",
            method: Method::POST,
            path: |f| format!("/v1/clinics/{}/patients", f.clinic),
            body: |_| Some(json!({ "fullName": "C", "birthDate": "2010-01-01" })),
            allowed: "FAAFA",
        },
        Operation {
            name: "CreatePatientFromUser",
            method: Method::POST,
            path: |f| format!("/v1/clinics/{}/patients/{}", f.clinic, user()),
            body: |_| {
                Some(
                    json!({ "permissions": { "view": {} }, "fullName": "U", "birthDate": "2000-01-01" }),
                )
            },
            allowed: "FFFFA",
        },
        Operation {
            name: "GetPatient",
            method: Method::GET,
            path: |f| format!("/v1/clinics/{}/patients/{}", f.clinic, f.patient),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "UpdatePatient",
            method: Method::PUT,
            path: |f| format!("/v1/clinics/{}/patients/{}", f.clinic, f.patient),
            body: |_| Some(json!({ "mrn": "7" })),
            allowed: "FAAFA",
        },
        Operation {
            name: "DeletePatient",
            method: Method::DELETE,
            path: |f| format!("/v1/clinics/{}/patients/{}", f.clinic, f.patient),
            body: none,
            allowed: "FFAAA",
        },
        Operation {
            name: "UpdatePatientPermissions",
            method: Method::PUT,
            path: |f| {
                format!(
                    "/v1/clinics/{}/patients/{}/permissions",
                    f.clinic, f.patient
                )
            },
            body: |_| Some(json!({ "view": {} })),
            allowed: "FFFAA",
        },
        Operation {
            name: "DeletePatientPermission",
            method: Method::DELETE,
            path: |f| {
                format!(
                    "/v1/clinics/{}/patients/{}/permissions/upload",
                    f.clinic, f.patient
                )
            },
            body: none,
            allowed: "FFFAA",
        },
        Operation {
            name: "ListClinicsForPatient",
            method: Method::GET,
            path: |f| format!("/v1/patients/{}/clinics", f.patient),
            body: none,
            allowed: "FFFAA",
        },
        Operation {
            name: "SendUploadReminder",
            method: Method::POST,
            path: |f| {
                format!(
                    "/v1/clinics/{}/patients/{}/upload_reminder",
                    f.clinic, f.patient
                )
            },
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "EnableNewClinicExperience",
            method: Method::POST,
            path: |f| format!("/v1/clinicians/{}/migrate", f.admin),
            body: none,
            allowed: "FFAFA",
        },
        Operation {
            name: "TriggerInitialMigration",
            method: Method::POST,
            path: |f| format!("/v1/clinics/{}/migrate", f.clinic),
            body: |_| Some(json!({})),
            allowed: "FFAFF",
        },
        Operation {
            name: "MigrateLegacyClinicianPatients",
            method: Method::POST,
            path: |f| format!("/v1/clinics/{}/migrations", f.clinic),
            body: |_| Some(json!({ "userId": user() })),
            allowed: "FFFFA",
        },
        Operation {
            name: "ListMigrations",
            method: Method::GET,
            path: |f| format!("/v1/clinics/{}/migrations", f.clinic),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "GetMigration",
            method: Method::GET,
            path: |f| format!("/v1/clinics/{}/migrations/{}", f.clinic, f.legacy),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "UpdateMigration",
            method: Method::PATCH,
            path: |f| format!("/v1/clinics/{}/migrations/{}", f.clinic, f.legacy),
            body: |_| Some(json!({ "status": "RUNNING" })),
            allowed: "FFFFA",
        },
        Operation {
            name: "DeleteUserFromClinics (the patient)",
            method: Method::DELETE,
            path: |f| format!("/v1/users/{}/clinics", f.patient),
            body: none,
            allowed: "FFFFA",
        },
        Operation {
            name: "UpdateClinicUserDetails (the patient)",
            method: Method::POST,
            path: |f| format!("/v1/users/{}/clinics", f.patient),
            body: |_| Some(json!({ "email": "p@example.org" })),
            allowed: "FFFFA",
        },
        Operation {
            name: "SendPatientInvite (the stranger's)",
            method: Method::POST,
            path: |f| format!("/confirm/send/invite/{}/clinic", f.stranger),
            body: |f| {
                Some(
                    json!({ "shareCode": f.share_code, "permissions": { "view": {} }, "fullName": "S", "birthDate": "1999-09-09" }),
                )
            },
            allowed: "AFFFA",
        },
        Operation {
            name: "GetPatientInvites",
            method: Method::GET,
            path: |f| format!("/v1/clinics/{}/invites/patients", f.clinic),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "AcceptPatientInvitation",
            method: Method::PUT,
            path: |f| format!("/v1/clinics/{}/invites/patients/{}", f.clinic, f.invite),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "DeclinePatientInvitation",
            method: Method::DELETE,
            path: |f| format!("/v1/clinics/{}/invites/patients/{}", f.clinic, f.invite),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "UpdatePatientReviews",
            method: Method::PUT,
            path: |f| format!("/v1/clinics/{}/patients/{}/reviews", f.clinic, f.patient),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "DeletePatientReviews (none to delete)",
            method: Method::DELETE,
            path: |f| format!("/v1/clinics/{}/patients/{}/reviews", f.clinic, f.patient),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "CreatePatientTag",
            method: Method::POST,
            path: |f| format!("/v1/clinics/{}/patient_tags", f.clinic),
            body: |_| Some(json!({ "name": "New" })),
            allowed: "FAAFA",
        },
        Operation {
            name: "UpdatePatientTag",
            method: Method::PUT,
            path: |f| format!("/v1/clinics/{}/patient_tags/{}", f.clinic, f.tag),
            body: |_| Some(json!({ "name": "Renamed" })),
            allowed: "FAAFA",
        },
        Operation {
            name: "DeletePatientTag",
            method: Method::DELETE,
            path: |f| format!("/v1/clinics/{}/patient_tags/{}", f.clinic, f.tag),
            body: none,
            allowed: "FFAFA",
        },
        Operation {
            name: "AssignPatientTagToClinicPatients",
            method: Method::POST,
            path: |f| format!("/v1/clinics/{}/patients/assign_tag/{}", f.clinic, f.tag),
            body: |f| Some(json!([f.patient])),
            allowed: "FFAFA",
        },
        Operation {
            name: "DeletePatientTagFromClinicPatients",
            method: Method::POST,
            path: |f| format!("/v1/clinics/{}/patients/delete_tag/{}", f.clinic, f.tag),
            body: none,
            allowed: "FFAFA",
        },
        Operation {
            name: "CreateSite",
            method: Method::POST,
            path: |f| format!("/v1/clinics/{}/sites", f.clinic),
            body: |_| Some(json!({ "name": "Elsewhere" })),
            allowed: "FFAFA",
        },
        Operation {
            name: "UpdateSite",
            method: Method::PUT,
            path: |f| format!("/v1/clinics/{}/sites/{}", f.clinic, f.site),
            body: |_| Some(json!({ "name": "Renamed Site" })),
            allowed: "FFAFA",
        },
        Operation {
            name: "DeleteSite",
            method: Method::DELETE,
            path: |f| format!("/v1/clinics/{}/sites/{}", f.clinic, f.site),
            body: none,
            allowed: "FFAFA",
        },
        Operation {
            name: "GetMRNSettings",
            method: Method::GET,
            path: |f| format!("/v1/clinics/{}/settings/mrn", f.clinic),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "UpdateMRNSettings",
            method: Method::PUT,
            path: |f| format!("/v1/clinics/{}/settings/mrn", f.clinic),
            body: |_| Some(json!({ "required": false, "unique": true })),
            allowed: "FFFFA",
        },
        Operation {
            name: "GetPatientCountSettings",
            method: Method::GET,
            path: |f| format!("/v1/clinics/{}/settings/patient_count", f.clinic),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "UpdatePatientCountSettings",
            method: Method::PUT,
            path: |f| format!("/v1/clinics/{}/settings/patient_count", f.clinic),
            body: |_| Some(json!({ "hardLimit": { "plan": 10 } })),
            allowed: "FFFFA",
        },
        Operation {
            name: "GetPatientCount",
            method: Method::GET,
            path: |f| format!("/v1/clinics/{}/patient_count", f.clinic),
            body: none,
            allowed: "FAAFA",
        },
        Operation {
            name: "InviteClinician",
            method: Method::POST,
            path: |f| format!("/v1/clinics/{}/invites/clinicians", f.clinic),
            body: |_| {
                Some(json!({ "email": "new-member@example.org", "roles": ["CLINIC_MEMBER"] }))
            },
            allowed: "FFAFA",
        },
        Operation {
            name: "DeleteInvite",
            method: Method::DELETE,
            path: |f| {
                format!(
                    "/v1/clinics/{}/invites/clinicians/{}",
                    f.clinic, f.clinician_invite
                )
            },
            body: none,
            allowed: "FFAFA",
        },
        Operation {
            name: "GetInvitedClinician",
            method: Method::GET,
            path: |f| {
                format!(
                    "/v1/clinics/{}/invites/clinicians/{}/clinician",
                    f.clinic, f.clinician_invite
                )
            },
            body: none,
            allowed: "FFFFA",
        },
        Operation {
            name: "AssociateClinicianToUser (the stranger)",
            method: Method::PATCH,
            path: |f| {
                format!(
                    "/v1/clinics/{}/invites/clinicians/{}/clinician",
                    f.clinic, f.clinician_invite
                )
            },
            body: |f| Some(json!({ "userId": f.stranger })),
            allowed: "FFFFA",
        },
        Operation {
            name: "DeleteInvitedClinician",
            method: Method::DELETE,
            path: |f| {
                format!(
                    "/v1/clinics/{}/invites/clinicians/{}/clinician",
                    f.clinic, f.clinician_invite
                )
            },
            body: none,
            allowed: "FFFFA",
        },
    ]
}

fn token(fixture: &Fixture, who: Who) -> Option<String> {
    match who {
        Who::Nobody => None,
        Who::Stranger => Some(TestApi::token(&fixture.stranger, false)),
        Who::Member => Some(TestApi::token(&fixture.member, false)),
        Who::Admin => Some(TestApi::token(&fixture.admin, false)),
        Who::Patient => Some(TestApi::token(&fixture.patient, false)),
        Who::Service => Some(service()),
    }
}

#[tokio::test]
async fn every_operation_answers_every_kind_of_caller_as_the_authorisation_model_says() {
    let api = TestApi::spawn().await;
    let mut wrong = Vec::new();
    let mut cells = 0;
    for operation in operations() {
        for (i, who) in CALLERS.iter().enumerate() {
            let fixture = fixture(&api).await;
            let (status, body) = api
                .call(
                    operation.method.clone(),
                    &(operation.path)(&fixture),
                    token(&fixture, *who).as_deref(),
                    (operation.body)(&fixture),
                )
                .await;
            cells += 1;
            let expected = match who {
                Who::Nobody => "401",
                _ => match operation.allowed.as_bytes()[i - 1] {
                    b'A' => "allowed",
                    _ => "403",
                },
            };
            let ok = match expected {
                "401" => status == StatusCode::UNAUTHORIZED,
                "403" => status == StatusCode::FORBIDDEN,
                _ => {
                    status != StatusCode::UNAUTHORIZED
                        && status != StatusCode::FORBIDDEN
                        && status.as_u16() < 500
                }
            };
            if !ok {
                wrong.push(format!(
                    "{} as {who:?}: expected {expected}, got {status} {body}",
                    operation.name
                ));
            }
        }
    }
    assert_eq!(cells, operations().len() * CALLERS.len());
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
