//! Patients through HTTP: custodial and existing-user creation, listing with search, tags, sort
//! and paging, PUT that keeps omitted fields, the patient's own permissions, deletion with its
//! archive, a patient's clinics, and the upload reminder.

use bson::doc;
use bson::oid::ObjectId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{TestApi, assert_error, service, user};

struct Clinic {
    id: String,
    admin: String,
    member: String,
}

async fn clinic(api: &TestApi) -> Clinic {
    let (admin, member) = (user(), user());
    let id = api.create_clinic(&admin).await;
    api.add_clinician(&id, &member, "CLINIC_MEMBER").await;
    Clinic { id, admin, member }
}

async fn share(api: &TestApi, clinic: &str, patient: &str, body: Value) -> (StatusCode, Value) {
    api.call(
        Method::POST,
        &format!("/v1/clinics/{clinic}/patients/{patient}"),
        Some(&service()),
        Some(body),
    )
    .await
}

async fn stored(api: &TestApi, clinic: &str, patient: &str) -> Option<bson::Document> {
    api.db
        .collection::<bson::Document>("patients")
        .find_one(doc! { "clinicId": ObjectId::parse_str(clinic).expect("oid"), "userId": patient })
        .await
        .expect("read")
}

#[tokio::test]
async fn members_create_custodial_patients_and_services_add_existing_users_once() {
    let api = TestApi::spawn().await;
    let clinic = clinic(&api).await;
    let member = TestApi::token(&clinic.member, false);

    let (status, custodial) = api
        .call(Method::POST, &format!("/v1/clinics/{}/patients", clinic.id), Some(&member), Some(json!({ "fullName": "Kid Doe", "birthDate": "2015-02-28", "email": "Parent@Example.org", "mrn": "A1" })))
        .await;
    assert_eq!(status, StatusCode::OK, "{custodial}");
    assert_eq!(
        custodial["permissions"],
        json!({ "custodian": {}, "view": {}, "upload": {}, "note": {} })
    );
    assert_eq!(custodial["email"], "parent@example.org");
    assert_eq!(
        custodial["connectionRequests"],
        json!({ "twiist": [], "dexcom": [], "abbott": [] })
    );
    let id = custodial["id"].as_str().expect("id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let record = stored(&api, &clinic.id, id).await.expect("stored");
    assert_eq!(
        record.get_document("permissions").expect("grants"),
        &doc! { "custodian": {}, "view": {}, "upload": {}, "note": {} }
    );
    assert_eq!(
        record.get_object_id("clinicId"),
        Ok(ObjectId::parse_str(&clinic.id).expect("oid"))
    );
    assert_eq!(record.get_str("invitedBy"), Ok(clinic.member.as_str()));

    let patient = user();
    let (status, shared) = share(
        &api,
        &clinic.id,
        &patient,
        json!({ "permissions": { "view": {}, "upload": {} }, "fullName": "Pat", "birthDate": "1990-01-01" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{shared}");
    assert_eq!(shared["permissions"], json!({ "view": {}, "upload": {} }));
    assert_error(
        &share(
            &api,
            &clinic.id,
            &patient,
            json!({ "permissions": { "view": {} }, "fullName": "Pat", "birthDate": "1990-01-01" }),
        )
        .await,
        StatusCode::CONFLICT,
        "already has",
    );
    assert_error(
        &share(
            &api,
            &clinic.id,
            &user(),
            json!({ "permissions": {}, "fullName": "Pat Doe", "birthDate": "2000-01-01" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "permissions",
    );
    assert_error(
        &share(
            &api,
            &clinic.id,
            &user(),
            json!({ "permissions": { "admin": {} } }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "permissions",
    );
    assert_error(
        &share(
            &api,
            &clinic.id,
            &user(),
            json!({ "permissions": { "view": {} }, "fullName": "No Birthday" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "birthDate",
    );
    let by_member = api
        .call(
            Method::POST,
            &format!("/v1/clinics/{}/patients/{}", clinic.id, user()),
            Some(&member),
            Some(json!({ "permissions": { "view": {} } })),
        )
        .await;
    assert_error(&by_member, StatusCode::FORBIDDEN, "forbidden");
    let invalid = [
        (json!({ "birthDate": "2015-02-28" }), "fullName"),
        (
            json!({ "fullName": "X", "birthDate": "2015-02-30" }),
            "birthDate",
        ),
        (
            json!({ "fullName": "X", "birthDate": "2015-01-01", "email": "nope" }),
            "email",
        ),
        (
            json!({ "fullName": "X", "birthDate": "2015-01-01", "diagnosisType": "type9" }),
            "diagnosisType",
        ),
        (
            json!({ "fullName": "X", "birthDate": "2015-01-01", "tags": [ObjectId::new().to_hex()] }),
            "tags[0]",
        ),
    ];
    for (body, field) in invalid {
        let answer = api
            .call(
                Method::POST,
                &format!("/v1/clinics/{}/patients", clinic.id),
                Some(&member),
                Some(body),
            )
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, field);
    }
    let stranger = api
        .call(
            Method::POST,
            &format!("/v1/clinics/{}/patients", clinic.id),
            Some(&TestApi::token(&user(), false)),
            Some(json!({ "fullName": "X", "birthDate": "2015-01-01" })),
        )
        .await;
    assert_error(&stranger, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn the_list_searches_filters_by_tags_sorts_and_pages_with_counts() {
    let api = TestApi::spawn().await;
    let clinic = clinic(&api).await;
    let (red, blue) = (ObjectId::new(), ObjectId::new());
    api.db
        .collection::<bson::Document>("clinics")
        .update_one(
            doc! { "_id": ObjectId::parse_str(&clinic.id).expect("oid") },
            doc! { "$set": { "patientTags": [{ "_id": red, "name": "red" }, { "_id": blue, "name": "blue" }] } },
        )
        .await
        .expect("tags");
    let people = [
        ("Zoe Alpha", "2001-01-01", vec![red]),
        ("adam beta", "1999-05-05", vec![red, blue]),
        ("Mia (Gamma)", "2010-10-10", vec![]),
    ];
    for (name, birth, tags) in &people {
        let tags: Vec<String> = tags.iter().map(|t| t.to_hex()).collect();
        let (status, body) = share(&api, &clinic.id, &user(), json!({ "permissions": { "view": {} }, "fullName": name, "birthDate": birth, "tags": tags })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let member = TestApi::token(&clinic.member, false);
    let list = |query: String| {
        let (api, member, clinic) = (&api, &member, &clinic.id);
        async move {
            api.call(
                Method::GET,
                &format!("/v1/clinics/{clinic}/patients{query}"),
                Some(member),
                None,
            )
            .await
        }
    };
    let names = |v: &Value| {
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|p| p["fullName"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };

    let all = list(String::new()).await;
    assert_eq!(all.0, StatusCode::OK);
    assert_eq!(all.1["meta"], json!({ "count": 3, "totalCount": 3 }));
    let searched = list("?search=ALPHA".into()).await;
    assert_eq!(names(&searched.1), vec!["Zoe Alpha"]);
    assert_eq!(searched.1["meta"], json!({ "count": 1, "totalCount": 3 }));
    assert_eq!(
        names(&list("?search=(gamma)".into()).await.1),
        vec!["Mia (Gamma)"]
    );
    assert_eq!(
        names(&list(format!("?tags={}", red.to_hex())).await.1).len(),
        2
    );
    assert_eq!(
        names(
            &list(format!("?tags={},{}", red.to_hex(), blue.to_hex()))
                .await
                .1
        ),
        vec!["adam beta"]
    );
    assert_eq!(
        names(&list("?sort=-birthDate".into()).await.1),
        vec!["Mia (Gamma)", "Zoe Alpha", "adam beta"]
    );
    // The matching count however the page falls: full, short, past the end.
    let red_tag = red.to_hex();
    for (query, shown, count) in [
        (format!("?tags={red_tag}&limit=1"), 1, 2),
        (format!("?tags={red_tag}&offset=1&limit=5"), 1, 2),
        ("?search=a&offset=10".to_owned(), 0, 3),
        ("?search=zoe&offset=0".to_owned(), 1, 1),
    ] {
        let answer = list(query.clone()).await;
        assert_eq!(names(&answer.1).len(), shown, "{query}");
        assert_eq!(
            answer.1["meta"],
            json!({ "count": count, "totalCount": 3 }),
            "{query}"
        );
    }
    let page = list("?sort=%2BbirthDate&offset=1&limit=1".into()).await;
    assert_eq!(names(&page.1), vec!["Zoe Alpha"]);
    assert_eq!(page.1["meta"], json!({ "count": 3, "totalCount": 3 }));
    assert_error(
        &list("?sort=password".into()).await,
        StatusCode::BAD_REQUEST,
        "sort",
    );
    assert_error(
        &list("?tags=red".into()).await,
        StatusCode::BAD_REQUEST,
        "tags",
    );
    let stranger = api
        .call(
            Method::GET,
            &format!("/v1/clinics/{}/patients", clinic.id),
            Some(&TestApi::token(&user(), false)),
            None,
        )
        .await;
    assert_error(&stranger, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn put_changes_what_is_sent_and_never_nulls_the_rest() {
    let api = TestApi::spawn().await;
    let clinic = clinic(&api).await;
    let patient = user();
    share(&api, &clinic.id, &patient, json!({ "permissions": { "view": {} }, "fullName": "Pat Smith", "birthDate": "1980-03-04", "mrn": "M-1" })).await;
    let path = format!("/v1/clinics/{}/patients/{patient}", clinic.id);
    let member = TestApi::token(&clinic.member, false);
    // createPatient.v1 has neither field; patient.v1 has both.
    let (status, _) = api
        .call(
            Method::PUT,
            &path,
            Some(&member),
            Some(json!({ "email": "pat@example.org", "targetDevices": ["dexcomG6"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, updated) = api
        .call(
            Method::PUT,
            &path,
            Some(&member),
            Some(json!({ "mrn": "M-2", "email": null, "permissions": { "custodian": {} } })),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["mrn"], "M-2");
    assert_eq!(updated["email"], "pat@example.org", "null is not a change");
    assert_eq!(updated["fullName"], "Pat Smith");
    assert_eq!(updated["birthDate"], "1980-03-04");
    assert_eq!(updated["targetDevices"], json!(["dexcomG6"]));
    assert_eq!(
        updated["permissions"],
        json!({ "view": {} }),
        "permissions change through their own operations"
    );
    let got = api.call(Method::GET, &path, Some(&member), None).await;
    assert_eq!(got, (StatusCode::OK, updated));
    assert_error(
        &api.call(
            Method::GET,
            &format!("/v1/clinics/{}/patients/{}", clinic.id, user()),
            Some(&member),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    assert_error(
        &api.call(
            Method::GET,
            &format!("/v1/clinics/{}/patients/not-a-user", clinic.id),
            Some(&member),
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "patientId",
    );
}

#[tokio::test]
async fn a_patient_manages_their_grants_but_cannot_grant_custodian_and_the_last_one_removes_them() {
    let api = TestApi::spawn().await;
    let clinic = clinic(&api).await;
    let patient = user();
    share(
        &api,
        &clinic.id,
        &patient,
        json!({ "permissions": { "view": {}, "upload": {} }, "fullName": "Pat Doe", "birthDate": "2000-01-01" }),
    )
    .await;
    let base = format!("/v1/clinics/{}/patients/{patient}/permissions", clinic.id);
    let own = TestApi::token(&patient, false);

    let refused = api
        .call(
            Method::PUT,
            &base,
            Some(&own),
            Some(json!({ "view": {}, "custodian": {} })),
        )
        .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "custodian");
    let admin = api
        .call(
            Method::PUT,
            &base,
            Some(&TestApi::token(&clinic.admin, false)),
            Some(json!({ "view": {} })),
        )
        .await;
    assert_error(&admin, StatusCode::FORBIDDEN, "forbidden");
    let (status, grants) = api
        .call(
            Method::PUT,
            &base,
            Some(&own),
            Some(json!({ "view": {}, "note": {} })),
        )
        .await;
    assert_eq!(
        (status, grants),
        (StatusCode::OK, json!({ "view": {}, "note": {} }))
    );

    let dropped = api
        .call(Method::DELETE, &format!("{base}/note"), Some(&own), None)
        .await;
    assert_eq!(dropped, (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(
        stored(&api, &clinic.id, &patient)
            .await
            .expect("still there")
            .get_document("permissions")
            .expect("grants"),
        &doc! { "view": {} }
    );
    assert_error(
        &api.call(
            Method::DELETE,
            &format!("{base}/everything"),
            Some(&own),
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "permission",
    );
    let last = api
        .call(Method::DELETE, &format!("{base}/view"), Some(&own), None)
        .await;
    assert_eq!(last.0, StatusCode::NO_CONTENT);
    assert!(
        stored(&api, &clinic.id, &patient).await.is_none(),
        "no grant left: removed"
    );
    let archived = api
        .db
        .collection::<bson::Document>("patient_deletions")
        .find_one(doc! { "patient.userId": &patient })
        .await
        .expect("read")
        .expect("archived");
    assert_eq!(archived.get_str("deletedByUserId"), Ok(patient.as_str()));
}

#[tokio::test]
async fn admins_and_the_patient_delete_members_do_not_and_the_record_is_archived() {
    let api = TestApi::spawn().await;
    let clinic = clinic(&api).await;
    let (first, second) = (user(), user());
    share(
        &api,
        &clinic.id,
        &first,
        json!({ "permissions": { "view": {} }, "fullName": "Pat Doe", "birthDate": "2000-01-01" }),
    )
    .await;
    share(
        &api,
        &clinic.id,
        &second,
        json!({ "permissions": { "view": {} }, "fullName": "Pat Doe", "birthDate": "2000-01-01" }),
    )
    .await;
    let path = |p: &str| format!("/v1/clinics/{}/patients/{p}", clinic.id);

    assert_error(
        &api.call(
            Method::DELETE,
            &path(&first),
            Some(&TestApi::token(&clinic.member, false)),
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_eq!(
        api.call(
            Method::DELETE,
            &path(&first),
            Some(&TestApi::token(&clinic.admin, false)),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(
            Method::DELETE,
            &path(&second),
            Some(&TestApi::token(&second, false)),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );

    let archived = api
        .db
        .collection::<bson::Document>("patient_deletions")
        .count_documents(doc! {})
        .await
        .expect("count");
    assert_eq!(archived, 2);
    assert_error(
        &api.call(
            Method::DELETE,
            &path(&first),
            Some(&TestApi::token(&clinic.admin, false)),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not found",
    );
}

#[tokio::test]
async fn a_patient_lists_their_clinics_and_members_send_upload_reminders() {
    let api = TestApi::spawn().await;
    let (one, two) = (clinic(&api).await, clinic(&api).await);
    let patient = user();
    share(
        &api,
        &one.id,
        &patient,
        json!({ "permissions": { "view": {} }, "fullName": "Pat Doe", "birthDate": "2000-01-01" }),
    )
    .await;
    share(
        &api,
        &two.id,
        &patient,
        json!({ "permissions": { "upload": {} }, "fullName": "Pat Doe", "birthDate": "2000-01-01" }),
    )
    .await;
    let path = format!("/v1/patients/{patient}/clinics");

    let (status, mine) = api
        .call(
            Method::GET,
            &path,
            Some(&TestApi::token(&patient, false)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let clinics: Vec<&str> = mine
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["clinic"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(clinics, vec![one.id.as_str(), two.id.as_str()]);
    assert_eq!(mine[1]["patient"]["permissions"], json!({ "upload": {} }));
    assert_error(
        &api.call(
            Method::GET,
            &path,
            Some(&TestApi::token(&one.member, false)),
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    let reminder = format!("/v1/clinics/{}/patients/{patient}/upload_reminder", one.id);
    assert_eq!(
        api.call(
            Method::POST,
            &reminder,
            Some(&TestApi::token(&one.member, false)),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    let record = stored(&api, &one.id, &patient).await.expect("stored");
    assert!(record.get_datetime("lastUploadReminderTime").is_ok());
    let got = api
        .call(
            Method::GET,
            &format!("/v1/clinics/{}/patients/{patient}", one.id),
            Some(&TestApi::token(&one.member, false)),
            None,
        )
        .await;
    assert!(got.1["lastUploadReminderTime"].is_string(), "{}", got.1);
    assert_error(
        &api.call(
            Method::POST,
            &reminder,
            Some(&TestApi::token(&two.member, false)),
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
}

#[tokio::test]
async fn racing_deletes_of_a_patient_remove_and_archive_it_once_and_the_rest_answer_404() {
    let api = TestApi::spawn().await;
    let clinic = clinic(&api).await;
    for round in 0..10 {
        let patient = user();
        let (status, body) = share(&api, &clinic.id, &patient, json!({ "permissions": { "view": {} }, "fullName": "Pat Race", "birthDate": "2000-01-01" })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let path = format!("/v1/clinics/{}/patients/{patient}", clinic.id);
        let token = service();

        let answers = futures::future::join_all(
            (0..4).map(|_| api.call(Method::DELETE, &path, Some(&token), None)),
        )
        .await;

        let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| s.as_u16()).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [204, 404, 404, 404], "round {round}: {answers:?}");
        let archives = api
            .db
            .collection::<bson::Document>("patient_deletions")
            .count_documents(doc! { "patient.userId": &patient })
            .await
            .expect("count");
        assert_eq!(archives, 1, "round {round}");
        assert_eq!(stored(&api, &clinic.id, &patient).await, None);
    }
}

#[tokio::test]
async fn members_review_a_patient_the_last_two_reviews_stay_and_only_the_author_takes_one_back() {
    let api = TestApi::spawn().await;
    let (admin, member, patient) = (user(), user(), user());
    let clinic = api.create_clinic(&admin).await;
    api.add_clinician(&clinic, &member, "CLINIC_MEMBER").await;
    api.add_patient(&clinic, &patient).await;
    let reviews = format!("/v1/clinics/{clinic}/patients/{patient}/reviews");
    let (admin_token, member_token) = (
        TestApi::token(&admin, false),
        TestApi::token(&member, false),
    );
    let none = api
        .call(Method::DELETE, &reviews, Some(&member_token), None)
        .await;
    assert_error(&none, StatusCode::NOT_FOUND, "no review");
    for token in [&admin_token, &member_token, &admin_token] {
        let (status, answer) = api.call(Method::PUT, &reviews, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let (_, read) = api
        .call(
            Method::GET,
            &format!("/v1/clinics/{clinic}/patients/{patient}"),
            Some(&member_token),
            None,
        )
        .await;
    let authors: Vec<&str> = read["reviews"]
        .as_array()
        .expect("reviews")
        .iter()
        .map(|r| r["clinicianId"].as_str().expect("clinicianId"))
        .collect();
    assert_eq!(
        authors,
        [admin.as_str(), member.as_str()],
        "newest first, two kept"
    );
    let not_theirs = api
        .call(Method::DELETE, &reviews, Some(&member_token), None)
        .await;
    assert_error(&not_theirs, StatusCode::CONFLICT, "another clinician");
    let (status, left) = api
        .call(Method::DELETE, &reviews, Some(&admin_token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(left.as_array().map(Vec::len), Some(1));
    assert_eq!(left[0]["clinicianId"], json!(member));
}
