//! Defects an outside test found (issue 18), each pinned: out-of-range paging, trailing garbage
//! after a JSON body, tokens not valid yet, control characters in addresses, and the error
//! shape of a wrong method.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{SECRET, TestApi, assert_error, service, user};

#[tokio::test]
async fn paged_routes_refuse_offsets_the_database_cannot_skip_with_a_400_naming_offset() {
    let api = TestApi::spawn().await;
    let service = TestApi::token(&user(), true);
    let (status, clinic) = api
        .call(
            Method::POST,
            "/v1/clinics",
            Some(&TestApi::token(&user(), false)),
            Some(json!({ "name": "Paging" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{clinic}");
    let clinic = clinic["id"].as_str().expect("id").to_owned();
    let someone = user();
    let routes = [
        "/v1/clinics".to_owned(),
        format!("/v1/clinics/{clinic}/clinicians"),
        format!("/v1/clinics/{clinic}/patients"),
        format!("/v1/clinicians/{someone}/clinics"),
        format!("/v1/patients/{someone}/clinics"),
    ];

    for route in &routes {
        for offset in ["9223372036854775808", "-1"] {
            let answer = api
                .call(
                    Method::GET,
                    &format!("{route}?offset={offset}"),
                    Some(&service),
                    None,
                )
                .await;
            assert_error(&answer, StatusCode::BAD_REQUEST, "offset");
        }
    }
}

#[tokio::test]
async fn a_json_body_followed_by_anything_but_white_space_is_refused() {
    let api = TestApi::spawn().await;
    let request = api
        .request(Method::POST, "/v1/clinics")
        .bearer_auth(TestApi::token(&user(), false))
        .header("content-type", "application/json")
        .body(r#"{"name": "Trailing"} xyz"#);

    let answer = api.send(request).await;

    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid JSON body");
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let api = TestApi::spawn().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({ "sub": user(), "exp": now + 7_200, "nbf": now + 3_600, "svr": "yes" });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token");

    let answer = api
        .call(Method::GET, "/v1/clinics", Some(&token), None)
        .await;

    assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{:?}", answer.1);
}

#[tokio::test]
async fn email_addresses_with_control_characters_are_refused() {
    let api = TestApi::spawn().await;
    let service = TestApi::token(&user(), true);

    let answer = api
        .call(
            Method::POST,
            &format!("/v1/users/{}/clinics", user()),
            Some(&service),
            Some(json!({ "email": "ada\u{0}@example.org" })),
        )
        .await;

    assert_error(&answer, StatusCode::BAD_REQUEST, "email");
}

#[tokio::test]
async fn a_method_a_route_does_not_have_answers_405_in_the_error_shape() {
    let api = TestApi::spawn().await;

    let answer = api
        .send(
            api.request(Method::PATCH, "/v1/clinics")
                .bearer_auth(TestApi::token(&user(), false)),
        )
        .await;

    assert_error(
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
    );
    let raw = api
        .request(Method::PATCH, "/v1/clinics")
        .bearer_auth(TestApi::token(&user(), false))
        .send()
        .await
        .expect("answer");
    let allow = raw.headers()["allow"].to_str().expect("text").to_owned();
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: {allow}"
    );
}

#[tokio::test]
async fn an_over_long_target_or_oversize_headers_answer_414_and_431_in_the_error_shape() {
    let api = TestApi::spawn().await;
    let token = TestApi::token(&user(), false);
    let long_query = format!("/v1/clinics?search={}", "a".repeat(20_000));
    let mut many = api.request(Method::GET, "/v1/clinics").bearer_auth(&token);
    for i in 0..150 {
        many = many.header(format!("x-filler-{i}"), "1");
    }

    let too_long = api
        .send(api.request(Method::GET, &long_query).bearer_auth(&token))
        .await;
    let too_many = api.send(many).await;
    let too_large = api
        .send(
            api.request(Method::GET, "/v1/clinics")
                .bearer_auth(&token)
                .header("x-filler", "b".repeat(100_000)),
        )
        .await;
    let fine = api
        .send(api.request(Method::GET, "/v1/clinics").bearer_auth(&token))
        .await;

    assert_error(&too_long, StatusCode::URI_TOO_LONG, "request target");
    assert_error(
        &too_many,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "header",
    );
    assert_error(
        &too_large,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "header",
    );
    assert_eq!(
        fine.0,
        StatusCode::FORBIDDEN,
        "a user may not list clinics: the request got through"
    );
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_answers_400_in_the_error_shape() {
    let api = TestApi::spawn().await;
    let token = TestApi::token(&user(), false);

    let answer = api
        .send(
            api.request(Method::GET, "/v1/clinics/%FF%FE")
                .bearer_auth(&token),
        )
        .await;

    assert_error(&answer, StatusCode::BAD_REQUEST, "path");
}

#[tokio::test]
async fn clinic_fields_outside_the_contracts_enums_and_bounds_are_refused() {
    let api = TestApi::spawn().await;
    let admin = user();
    let token = TestApi::token(&admin, false);
    let (status, clinic) = api
        .call(
            Method::POST,
            "/v1/clinics",
            Some(&token),
            Some(json!({ "name": "Zones" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{clinic}");
    let path = format!("/v1/clinics/{}", clinic["id"].as_str().expect("id"));
    let put = |body: serde_json::Value| api.call(Method::PUT, &path, Some(&token), Some(body));

    for zone in ["AAA", "Mars/Olympus_Mons", ""] {
        assert_error(
            &put(json!({ "timezone": zone })).await,
            StatusCode::BAD_REQUEST,
            "timezone",
        );
    }
    assert_error(
        &put(json!({ "phoneNumbers": [{ "type": "", "number": "+1 650 555 0100" }] })).await,
        StatusCode::BAD_REQUEST,
        "phoneNumbers[0].type",
    );
    let (status, updated) = put(json!({ "timezone": "America/Los_Angeles" })).await;

    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["timezone"], "America/Los_Angeles");
}

#[test]
fn the_accepted_time_zones_are_exactly_the_contracts() {
    let enumerated: Vec<&str> =
        super::contract::Contract::get().spec["components"]["schemas"]["clinicTimezone.v1"]["enum"]
            .as_array()
            .expect("the contract enumerates time zones")
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect();

    let mut accepted: Vec<&str> = clinic::api::clinics::TIMEZONES.iter().copied().collect();
    accepted.sort_unstable();
    let mut expected = enumerated.clone();
    expected.sort_unstable();
    assert_eq!(accepted, expected);
}

#[tokio::test]
async fn a_clinic_that_does_not_exist_is_404_on_every_clinic_route() {
    let api = TestApi::spawn().await;
    let token = TestApi::token(&user(), false);
    let missing = bson::oid::ObjectId::new().to_hex();
    let routes = [
        (Method::GET, format!("/v1/clinics/{missing}")),
        (Method::PUT, format!("/v1/clinics/{missing}")),
        (Method::DELETE, format!("/v1/clinics/{missing}")),
        (Method::GET, format!("/v1/clinics/{missing}/clinicians")),
        (Method::GET, format!("/v1/clinics/{missing}/patients")),
        (Method::GET, format!("/v1/clinics/{missing}/migrations")),
        (
            Method::GET,
            format!("/v1/clinics/{missing}/invites/patients"),
        ),
    ];

    for (method, path) in routes {
        let body = (method == Method::PUT).then(|| json!({ "name": "Nowhere" }));
        let answer = api.call(method.clone(), &path, Some(&token), body).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not found");
    }
}

#[tokio::test]
async fn a_clinic_deleted_while_a_patient_is_added_leaves_no_patient_behind() {
    let api = TestApi::spawn().await;
    let admin = user();
    let token = TestApi::token(&admin, false);
    let worker = service();
    for round in 0..40 {
        let (status, clinic) = api
            .call(
                Method::POST,
                "/v1/clinics",
                Some(&token),
                Some(json!({ "name": "Racing" })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{clinic}");
        let id = clinic["id"].as_str().expect("id").to_owned();
        let patient = format!("/v1/clinics/{id}/patients/{}", user());
        let body = json!({ "permissions": { "view": {} }, "fullName": "Pat Race", "birthDate": "2000-01-01" });

        let clinic_path = format!("/v1/clinics/{id}");
        // The addition starts 0 to 19.5 ms after the deletion, sweeping the deletion's steps.
        let lag = std::time::Duration::from_micros(500 * (round % 40));
        let (deleted, added) = tokio::join!(
            api.call(Method::DELETE, &clinic_path, Some(&token), None),
            async {
                tokio::time::sleep(lag).await;
                api.call(Method::POST, &patient, Some(&worker), Some(body))
                    .await
            },
        );

        let oid = bson::oid::ObjectId::parse_str(&id).expect("oid");
        let clinic = api
            .db
            .collection::<bson::Document>("clinics")
            .find_one(bson::doc! { "_id": oid })
            .await
            .expect("read");
        let patients = api
            .db
            .collection::<bson::Document>("patients")
            .count_documents(bson::doc! { "clinicId": oid })
            .await
            .expect("count");
        match &clinic {
            None => {
                assert_eq!(deleted.0, StatusCode::NO_CONTENT, "round {round}");
                assert_eq!(patients, 0, "round {round}: a patient of a deleted clinic");
                assert_ne!(added.0, StatusCode::OK, "round {round}: {added:?}");
            }
            Some(stored) => {
                assert_eq!(
                    deleted.0,
                    StatusCode::CONFLICT,
                    "round {round}: {deleted:?}"
                );
                assert!(!stored.contains_key("deletingSince"), "round {round}");
                assert_eq!(
                    patients,
                    u64::from(added.0 == StatusCode::OK),
                    "round {round}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_clinic_deleted_while_a_clinician_is_added_leaves_no_clinician_behind() {
    let api = TestApi::spawn().await;
    let admin = user();
    let token = TestApi::token(&admin, false);
    let worker = service();
    let clinicians = api.db.collection::<bson::Document>("clinicians");
    let archives = api.db.collection::<bson::Document>("clinician_deletions");
    for round in 0..40 {
        let id = api.create_clinic(&admin).await;
        let member = user();
        let body = json!({ "id": member, "email": format!("{member}@example.org"), "roles": ["CLINIC_MEMBER"] });
        let clinic_path = format!("/v1/clinics/{id}");
        let members_path = format!("{clinic_path}/clinicians");

        // The addition starts 0 to 19.5 ms after the deletion, sweeping the deletion's steps.
        let lag = std::time::Duration::from_micros(500 * (round % 40));
        let (deleted, added) = tokio::join!(
            api.call(Method::DELETE, &clinic_path, Some(&token), None),
            async {
                tokio::time::sleep(lag).await;
                api.call(Method::POST, &members_path, Some(&worker), Some(body))
                    .await
            },
        );

        let oid = bson::oid::ObjectId::parse_str(&id).expect("oid");
        let left = clinicians
            .count_documents(bson::doc! { "clinicId": oid })
            .await
            .expect("count");
        let archived = archives
            .count_documents(bson::doc! { "clinician.clinicId": oid, "clinician.userId": &member })
            .await
            .expect("count");
        assert_eq!(
            deleted.0,
            StatusCode::NO_CONTENT,
            "round {round}: {deleted:?}"
        );
        assert_eq!(
            left, 0,
            "round {round}: a clinician of a deleted clinic ({added:?})"
        );
        if added.0 == StatusCode::OK {
            // Added before the deletion listed the clinic's clinicians: deleted with them.
            assert_eq!(
                archived, 1,
                "round {round}: an added clinician deleted unarchived"
            );
        } else {
            assert_error(&added, StatusCode::NOT_FOUND, "not found");
        }
    }
}

/// Requests the contract allows, which a schema-driven fuzzer (schemathesis) found refused:
/// each is answered as the contract's schema lets a client expect.
#[tokio::test]
async fn requests_the_contract_allows_are_not_refused() {
    let api = TestApi::spawn().await;
    let admin = user();
    let token = TestApi::token(&admin, false);
    let clinic = api.create_clinic(&admin).await;
    let nowhere = "000000000000000000000000";

    // Every request body is optional in the contract: an update without one changes nothing.
    let no_body = api
        .send(
            api.request(Method::PUT, &format!("/v1/clinics/{clinic}"))
                .bearer_auth(&token),
        )
        .await;
    // The contract sets no maximum page size: a larger one is cut, not refused.
    let huge_limit = api
        .call(
            Method::GET,
            &format!("/v1/clinicians/{admin}/clinics?limit=246547883470350425788329754624"),
            Some(&token),
            None,
        )
        .await;
    // phoneNumber.v1 does not forbid other keys.
    let extra_keys = api
        .call(
            Method::PUT,
            &format!("/v1/clinics/{clinic}"),
            Some(&token),
            Some(json!({ "phoneNumbers": [{ "number": "555-0100", "ext": 12 }] })),
        )
        .await;
    // Any text is a share code to look up; what cannot be one is nobody's.
    let odd_code = api
        .call(Method::GET, "/v1/clinics/share_code/0", Some(&token), None)
        .await;
    // The migration routes' clinicId has no pattern in the contract: text that is no id names
    // no clinic.
    let odd_clinic = api
        .call(
            Method::GET,
            "/v1/clinics/fuzz-worker/migrations",
            Some(&service()),
            None,
        )
        .await;
    // A clinic that does not exist has no invites to list, for services too.
    let missing_invites = api
        .call(
            Method::GET,
            &format!("/v1/clinics/{nowhere}/invites/patients"),
            Some(&service()),
            None,
        )
        .await;

    assert_eq!(no_body.0, StatusCode::OK, "{:?}", no_body.1);
    assert_eq!(huge_limit.0, StatusCode::OK, "{:?}", huge_limit.1);
    assert_eq!(huge_limit.1.as_array().map(Vec::len), Some(1));
    assert_eq!(extra_keys.0, StatusCode::OK, "{:?}", extra_keys.1);
    assert_eq!(
        extra_keys.1["phoneNumbers"],
        json!([{ "number": "555-0100" }])
    );
    assert_error(&odd_code, StatusCode::NOT_FOUND, "share code");
    assert_error(&odd_clinic, StatusCode::NOT_FOUND, "not found");
    assert_error(&missing_invites, StatusCode::NOT_FOUND, "not found");

    // A body declared as something other than JSON is a 415, not a parse error.
    let xml = api
        .send(
            api.request(Method::PUT, &format!("/v1/clinics/{clinic}"))
                .bearer_auth(&token)
                .header("content-type", "application/xml")
                .body("<data></data>"),
        )
        .await;
    assert_error(&xml, StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/xml");
    // A migration update without a body changes nothing; a body must name the status.
    let legacy = user();
    api.add_migration(&clinic, &legacy).await;
    let path = format!("/v1/clinics/{clinic}/migrations/{legacy}");
    let unchanged = api
        .send(api.request(Method::PATCH, &path).bearer_auth(service()))
        .await;
    let empty = api
        .call(Method::PATCH, &path, Some(&service()), Some(json!({})))
        .await;
    assert_eq!(unchanged.0, StatusCode::OK, "{:?}", unchanged.1);
    assert_eq!(unchanged.1["status"], "PENDING");
    assert_error(&empty, StatusCode::BAD_REQUEST, "status");
}
