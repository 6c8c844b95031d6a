//! The typed client (`clinic-client`, generated from the contract at build time) against the
//! running API: a clinic's daily flow with typed requests and answers only. A contract change to
//! any of these operations changes the client's types, and this stops compiling where it no
//! longer fits. The served document names exactly the client's operations.

use clinic_client::{Client, types};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use super::{TestApi, service, user};

/// The client as `token`'s holder.
fn client(api: &TestApi, token: &str) -> Client {
    let mut headers = HeaderMap::new();
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value");
    headers.insert(AUTHORIZATION, bearer);
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client");
    Client::new_with_client(api.base_url(), http)
}

#[tokio::test]
async fn a_clinic_invites_a_clinician_takes_a_patient_tags_it_and_counts_through_the_typed_client()
{
    let api = TestApi::spawn().await;
    let (admin, joiner) = (user(), user());
    let as_admin = client(&api, &TestApi::token(&admin, false));
    let as_service = client(&api, &service());

    let clinic = as_admin
        .create_clinic(&types::ClinicV1Request {
            name: Some("Typed Clinic".parse().expect("a name")),
            ..Default::default()
        })
        .await
        .expect("created")
        .into_inner();
    assert_eq!(clinic.name.as_str(), "Typed Clinic");
    let id = clinic.id.to_string();

    let invited = as_admin
        .invite_clinician(
            &id.parse().expect("a clinic id"),
            &types::InviteClinicianV1Request {
                email: Some("joiner@example.org".parse().expect("an address")),
                roles: Some(types::ClinicianRolesV1(vec![
                    types::ClinicianRolesV1Item::ClinicAdmin,
                ])),
            },
        )
        .await
        .expect("invited")
        .into_inner();
    let invite = invited.invite_id.clone().expect("an invite id");
    let member = as_service
        .associate_clinician_to_user(
            &id.parse().expect("a clinic id"),
            &invite.parse().expect("an invite id"),
            &types::AssociateClinicianToUserV1Request {
                user_id: Some(joiner.clone()),
            },
        )
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(
        member.id.as_deref().map(String::as_str),
        Some(joiner.as_str())
    );
    assert!(member.invite_id.is_none());

    let patient = as_admin
        .create_patient_account(
            &id.parse().expect("a clinic id"),
            &types::PatientV1Request {
                full_name: Some("Kim Park".parse().expect("a name")),
                birth_date: Some("2010-05-06".parse().expect("a date")),
                mrn: Some("M-1".parse().expect("an MRN")),
                ..Default::default()
            },
        )
        .await
        .expect("a patient")
        .into_inner();
    let tag = as_admin
        .create_patient_tag(
            &id.parse().expect("a clinic id"),
            &types::PatientTagV1Request {
                name: Some("Type 1".parse().expect("a tag name")),
                ..Default::default()
            },
        )
        .await
        .expect("a tag")
        .into_inner();
    as_admin
        .assign_patient_tag_to_clinic_patients(
            &id.parse().expect("a clinic id"),
            &tag.id.to_string().parse().expect("a tag id"),
            &types::TidepoolUserIdsV1Request(Some(vec![
                patient.id.to_string().parse().expect("a user id"),
            ])),
        )
        .await
        .expect("tagged");
    let read = as_admin
        .get_patient(
            &id.parse().expect("a clinic id"),
            &patient.id.to_string().parse().expect("a patient id"),
        )
        .await
        .expect("read")
        .into_inner();
    let tags: Vec<String> = read
        .tags
        .and_then(|tags| tags.0)
        .unwrap_or_default()
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(tags, [tag.id.to_string()]);

    as_service
        .update_mrn_settings(
            &id.parse().expect("a clinic id"),
            &types::MrnSettingsV1Request {
                required: Some(false),
                unique: Some(true),
            },
        )
        .await
        .expect("settings");
    let settings = as_admin
        .get_mrn_settings(&id.parse().expect("a clinic id"))
        .await
        .expect("read")
        .into_inner();
    assert!(settings.unique && !settings.required);
    let count = as_admin
        .get_patient_count(&id.parse().expect("a clinic id"))
        .await
        .expect("counted")
        .into_inner();
    assert_eq!((count.total, count.plan, count.demo), (1, 1, 0));
}

#[tokio::test]
async fn the_client_has_exactly_the_operations_the_api_serves_from_the_contract() {
    let api = TestApi::spawn().await;
    let (_, served) = api
        .send(api.request(reqwest::Method::GET, "/v1/openapi.json"))
        .await;
    let contract = super::contract::Contract::get();
    let mut serving: Vec<String> = Vec::new();
    for (path, methods) in served["paths"].as_object().expect("paths") {
        for (method, operation) in methods.as_object().expect("methods") {
            if contract.operation(path, method).is_some() {
                serving.push(operation["operationId"].as_str().expect("id").to_owned());
            }
        }
    }
    serving.sort();
    let mut generated: Vec<&str> = clinic_client::operations().collect();
    generated.sort_unstable();
    assert_eq!(
        serving, generated,
        "src/client/operations.txt names what the API serves"
    );
}

#[tokio::test]
async fn a_legacy_clinician_enables_an_empty_clinic_names_it_and_starts_its_migration() {
    let api = TestApi::spawn().await;
    let legacy = user();
    let as_legacy = client(&api, &TestApi::token(&legacy, false));

    let empty = as_legacy
        .enable_new_clinic_experience(&legacy)
        .await
        .expect("enabled")
        .into_inner();
    assert_eq!(empty.name.as_str(), "", "no name until the admin gives one");
    assert!(!empty.can_migrate);
    let again = as_legacy
        .enable_new_clinic_experience(&legacy)
        .await
        .expect("enabled again")
        .into_inner();
    assert_eq!(again.id, empty.id, "a repeat answers the same clinic");

    let unnamed = as_legacy
        .trigger_initial_migration(&empty.id, &types::TriggerMigrationV1Request::default())
        .await
        .expect_err("refused without a name");
    assert_eq!(unnamed.status(), Some(reqwest::StatusCode::CONFLICT));

    let named = as_legacy
        .update_clinic(
            &empty.id.parse().expect("a clinic id"),
            &types::ClinicV1Request {
                name: Some("Legacy Practice".parse().expect("a name")),
                ..Default::default()
            },
        )
        .await
        .expect("named")
        .into_inner();
    assert!(named.can_migrate);
    let migration = as_legacy
        .trigger_initial_migration(&empty.id, &types::TriggerMigrationV1Request::default())
        .await
        .expect("triggered")
        .into_inner();
    assert_eq!(migration.user_id.as_str(), legacy);
    assert_eq!(migration.status, Some(types::MigrationStatusV1::Pending));
}
