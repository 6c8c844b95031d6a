//! Patient tags and sites through HTTP: limits, names unique as Tidepool compares them, tags on
//! patients in bulk, and deletions that reach the patients.

use bson::doc;
use bson::oid::ObjectId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{TestApi, assert_error, service, user};

async fn patient_doc(api: &TestApi, clinic: &str, patient: &str) -> bson::Document {
    api.db
        .collection::<bson::Document>("patients")
        .find_one(doc! { "clinicId": ObjectId::parse_str(clinic).expect("oid"), "userId": patient })
        .await
        .expect("read")
        .expect("patient")
}

async fn tags_of(api: &TestApi, clinic: &str, patient: &str) -> Vec<String> {
    patient_doc(api, clinic, patient)
        .await
        .get_array("tags")
        .map(|t| {
            t.iter()
                .filter_map(|t| t.as_object_id())
                .map(|o| o.to_hex())
                .collect()
        })
        .unwrap_or_default()
}

async fn clinic_list(api: &TestApi, clinic: &str, field: &str) -> Value {
    let (_, found) = api
        .call(
            Method::GET,
            &format!("/v1/clinics/{clinic}"),
            Some(&service()),
            None,
        )
        .await;
    found[field].clone()
}

#[tokio::test]
async fn members_create_and_rename_tags_admins_assign_remove_and_delete_them() {
    let api = TestApi::spawn().await;
    let (admin, member, ann, bob) = (user(), user(), user(), user());
    let clinic = api.create_clinic(&admin).await;
    api.add_clinician(&clinic, &member, "CLINIC_MEMBER").await;
    for patient in [&ann, &bob] {
        api.add_patient(&clinic, patient).await;
    }
    let (admin_token, member_token) = (
        TestApi::token(&admin, false),
        TestApi::token(&member, false),
    );
    let tags = format!("/v1/clinics/{clinic}/patient_tags");

    let (status, tag) = api
        .call(
            Method::POST,
            &tags,
            Some(&member_token),
            Some(json!({ "name": "Type 1" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tag}");
    let id = tag["id"].as_str().expect("id").to_owned();
    assert_eq!(tag["name"], "Type 1");
    // Names are unique ignoring case and spaces.
    let again = api
        .call(
            Method::POST,
            &tags,
            Some(&member_token),
            Some(json!({ "name": "type1" })),
        )
        .await;
    assert_error(&again, StatusCode::CONFLICT, "name");
    assert_error(
        &api.call(
            Method::POST,
            &tags,
            Some(&member_token),
            Some(json!({ "name": "no!" })),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "name",
    );
    let (status, renamed) = api
        .call(
            Method::PUT,
            &format!("{tags}/{id}"),
            Some(&member_token),
            Some(json!({ "name": "T1D" })),
        )
        .await;
    assert_eq!(
        (status, renamed["name"].clone()),
        (StatusCode::OK, json!("T1D"))
    );
    assert_eq!(
        clinic_list(&api, &clinic, "patientTags").await,
        json!([{ "id": id, "name": "T1D" }])
    );

    // Bulk: members may not, admins may; patients of other clinics are not touched.
    let assign = format!("/v1/clinics/{clinic}/patients/assign_tag/{id}");
    let refused = api
        .call(
            Method::POST,
            &assign,
            Some(&member_token),
            Some(json!([ann])),
        )
        .await;
    assert_eq!(refused.0, StatusCode::FORBIDDEN);
    let (status, _) = api
        .call(
            Method::POST,
            &assign,
            Some(&admin_token),
            Some(json!([ann, bob, user()])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tags_of(&api, &clinic, &ann).await, vec![id.clone()]);
    let (status, _) = api
        .call(
            Method::POST,
            &assign,
            Some(&admin_token),
            Some(json!([ann])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        tags_of(&api, &clinic, &ann).await,
        vec![id.clone()],
        "a tag once"
    );
    assert_error(
        &api.call(Method::POST, &assign, Some(&admin_token), Some(json!([])))
            .await,
        StatusCode::BAD_REQUEST,
        "user ids",
    );
    let unknown = format!(
        "/v1/clinics/{clinic}/patients/assign_tag/{}",
        ObjectId::new().to_hex()
    );
    assert_error(
        &api.call(
            Method::POST,
            &unknown,
            Some(&admin_token),
            Some(json!([ann])),
        )
        .await,
        StatusCode::NOT_FOUND,
        "tag",
    );
    let remove = format!("/v1/clinics/{clinic}/patients/delete_tag/{id}");
    let (status, _) = api
        .call(
            Method::POST,
            &remove,
            Some(&admin_token),
            Some(json!([bob])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(tags_of(&api, &clinic, &bob).await.is_empty());
    assert_eq!(tags_of(&api, &clinic, &ann).await, vec![id.clone()]);
    // Deleting the tag takes it off every patient.
    let refused = api
        .call(
            Method::DELETE,
            &format!("{tags}/{id}"),
            Some(&member_token),
            None,
        )
        .await;
    assert_eq!(refused.0, StatusCode::FORBIDDEN);
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("{tags}/{id}"),
            Some(&admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(tags_of(&api, &clinic, &ann).await.is_empty());
    assert_eq!(clinic_list(&api, &clinic, "patientTags").await, json!([]));
    let stored = api
        .db
        .collection::<bson::Document>("clinics")
        .find_one(doc! { "_id": ObjectId::parse_str(&clinic).expect("oid") })
        .await
        .expect("read")
        .expect("clinic");
    assert_eq!(
        stored
            .get_object_id("lastDeletedPatientTag")
            .map(|o| o.to_hex()),
        Ok(id.clone())
    );
    assert_error(
        &api.call(
            Method::DELETE,
            &format!("{tags}/{id}"),
            Some(&admin_token),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "tag",
    );
}

#[tokio::test]
async fn a_clinic_has_at_most_fifty_tags_and_fifty_sites() {
    let api = TestApi::spawn().await;
    let clinic = api.create_clinic(&user()).await;
    for n in 0..50 {
        api.add_tag(&clinic, &format!("tag{n}")).await;
        api.add_site(&clinic, &format!("Site {n}")).await;
    }
    for (path, name) in [("patient_tags", "tag50"), ("sites", "Site 50")] {
        let over = api
            .call(
                Method::POST,
                &format!("/v1/clinics/{clinic}/{path}"),
                Some(&service()),
                Some(json!({ "name": name })),
            )
            .await;
        assert_error(&over, StatusCode::CONFLICT, "at most 50");
    }
}

#[tokio::test]
async fn sites_are_managed_by_admins_and_renames_and_deletions_reach_the_patients_copies() {
    let api = TestApi::spawn().await;
    let (admin, member, ann) = (user(), user(), user());
    let clinic = api.create_clinic(&admin).await;
    api.add_clinician(&clinic, &member, "CLINIC_MEMBER").await;
    api.add_patient(&clinic, &ann).await;
    let admin_token = TestApi::token(&admin, false);
    let sites = format!("/v1/clinics/{clinic}/sites");
    let refused = api
        .call(
            Method::POST,
            &sites,
            Some(&TestApi::token(&member, false)),
            Some(json!({ "name": "North" })),
        )
        .await;
    assert_eq!(refused.0, StatusCode::FORBIDDEN);
    let (status, north) = api
        .call(
            Method::POST,
            &sites,
            Some(&admin_token),
            Some(json!({ "name": "North" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{north}");
    let id = north["id"].as_str().expect("id").to_owned();
    let south = api.add_site(&clinic, "South").await;
    // Unique ignoring case.
    assert_error(
        &api.call(
            Method::POST,
            &sites,
            Some(&admin_token),
            Some(json!({ "name": "NORTH" })),
        )
        .await,
        StatusCode::CONFLICT,
        "name",
    );
    assert_error(
        &api.call(
            Method::PUT,
            &format!("{sites}/{south}"),
            Some(&admin_token),
            Some(json!({ "name": "north" })),
        )
        .await,
        StatusCode::CONFLICT,
        "name",
    );
    // A patient carrying both sites (as Tidepool's patients keep copies).
    let oid = |hex: &str| ObjectId::parse_str(hex).expect("oid");
    api.db
        .collection::<bson::Document>("patients")
        .update_one(
            doc! { "clinicId": oid(&clinic), "userId": &ann },
            doc! { "$set": { "sites": [{ "id": oid(&id), "name": "North" }, { "id": oid(&south), "name": "South" }] } },
        )
        .await
        .expect("sites");
    let (status, renamed) = api
        .call(
            Method::PUT,
            &format!("{sites}/{id}"),
            Some(&admin_token),
            Some(json!({ "name": "North Campus" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    let copies = |patient: bson::Document| -> Vec<(String, String)> {
        patient
            .get_array("sites")
            .expect("sites")
            .iter()
            .filter_map(|s| s.as_document())
            .map(|s| {
                (
                    s.get_object_id("id").expect("id").to_hex(),
                    s.get_str("name").expect("name").to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        copies(patient_doc(&api, &clinic, &ann).await),
        [
            (id.clone(), "North Campus".to_owned()),
            (south.clone(), "South".to_owned())
        ]
    );
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("{sites}/{south}"),
            Some(&admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        copies(patient_doc(&api, &clinic, &ann).await),
        [(id.clone(), "North Campus".to_owned())]
    );
    assert_eq!(
        clinic_list(&api, &clinic, "sites").await,
        json!([{ "id": id, "name": "North Campus" }])
    );
    assert_error(
        &api.call(
            Method::DELETE,
            &format!("{sites}/{south}"),
            Some(&admin_token),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "site",
    );
}
