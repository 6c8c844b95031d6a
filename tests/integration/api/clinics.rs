//! Clinics through HTTP: create, get, get by share code, update, delete, list; auth and
//! validation answers.

use bson::doc;
use bson::oid::ObjectId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{TestApi, assert_error, user};

async fn create(api: &TestApi, admin: &str, body: Value) -> Value {
    let (status, clinic) = api
        .call(
            Method::POST,
            "/v1/clinics",
            Some(&TestApi::token(admin, false)),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{clinic}");
    clinic
}

fn id(clinic: &Value) -> String {
    clinic["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn creating_a_clinic_makes_the_caller_its_admin_with_a_fresh_share_code() {
    let api = TestApi::spawn().await;
    let admin = user();

    let clinic = create(
        &api,
        &admin,
        json!({ "name": "Palo Alto Diabetes", "city": "Palo Alto", "clinicType": "provider_practice",
                "phoneNumbers": [{"type": "main", "number": "+1 650 555 0100"}], "id": "ignored", "shareCode": "AAAA-AAAA-AAAA" }),
    )
    .await;

    let code = clinic["shareCode"].as_str().expect("share code");
    assert!(
        clinic::api::share_code::is_valid(code) && code != "AAAA-AAAA-AAAA",
        "{code}"
    );
    assert_eq!(clinic["name"], "Palo Alto Diabetes");
    assert_eq!(clinic["tier"], "tier0100");
    assert_eq!(clinic["tierDescription"], "Free");
    assert_eq!(clinic["preferredBgUnits"], "mg/dL");
    assert_eq!(clinic["canMigrate"], true);
    assert_eq!(
        clinic["phoneNumbers"],
        json!([{"type": "main", "number": "+1 650 555 0100"}])
    );
    let oid = ObjectId::parse_str(id(&clinic)).expect("an ObjectId");
    let stored = api
        .db
        .collection::<bson::Document>("clinics")
        .find_one(doc! { "_id": oid })
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        stored.get_array("admins").expect("admins"),
        &vec![bson::Bson::String(admin.clone())]
    );
    assert_eq!(
        stored.get_str("PreferredBgUnits"),
        Ok("mg/dL"),
        "the reference's capitalised key"
    );
    assert_eq!(stored.get_array("shareCodes").expect("codes").len(), 1);
    let member = api
        .db
        .collection::<bson::Document>("clinicians")
        .find_one(doc! { "clinicId": oid, "userId": &admin })
        .await
        .expect("read")
        .expect("the admin clinician exists");
    assert_eq!(
        member.get_array("roles").expect("roles"),
        &vec![bson::Bson::String("CLINIC_ADMIN".into())]
    );
    assert_eq!(
        member.get_str("email"),
        Ok(format!("{admin}@example.org").as_str())
    );
}

#[tokio::test]
async fn any_user_gets_a_clinic_by_id_or_any_of_its_share_codes() {
    let api = TestApi::spawn().await;
    let clinic = create(&api, &user(), json!({ "name": "North" })).await;
    let stranger = TestApi::token(&user(), false);

    let by_id = api
        .call(
            Method::GET,
            &format!("/v1/clinics/{}", id(&clinic)),
            Some(&stranger),
            None,
        )
        .await;
    let code = clinic["shareCode"].as_str().expect("code").to_lowercase();
    let by_code = api
        .call(
            Method::GET,
            &format!("/v1/clinics/share_code/{code}"),
            Some(&stranger),
            None,
        )
        .await;

    assert_eq!(by_id, (StatusCode::OK, clinic.clone()));
    assert_eq!(by_code, (StatusCode::OK, clinic));
    let missing = api
        .call(
            Method::GET,
            &format!("/v1/clinics/{}", ObjectId::new().to_hex()),
            Some(&stranger),
            None,
        )
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not found");
    let malformed = api
        .call(Method::GET, "/v1/clinics/not-an-id", Some(&stranger), None)
        .await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "clinicId");
    let bad_code = api
        .call(
            Method::GET,
            "/v1/clinics/share_code/IIII-0000-OOOO",
            Some(&stranger),
            None,
        )
        .await;
    assert_error(&bad_code, StatusCode::NOT_FOUND, "no clinic has share code");
    let unknown_code = api
        .call(
            Method::GET,
            "/v1/clinics/share_code/ABCD-EFGH-JKLM",
            Some(&stranger),
            None,
        )
        .await;
    assert_error(&unknown_code, StatusCode::NOT_FOUND, "ABCD-EFGH-JKLM");
}

#[tokio::test]
async fn update_sets_what_is_sent_and_keeps_what_is_omitted() {
    let api = TestApi::spawn().await;
    let admin = user();
    let clinic = create(
        &api,
        &admin,
        json!({ "name": "East", "city": "Oakland", "country": "US" }),
    )
    .await;
    let path = format!("/v1/clinics/{}", id(&clinic));

    let (status, updated) = api
        .call(
            Method::PUT,
            &path,
            Some(&TestApi::token(&admin, false)),
            Some(json!({ "city": "Berkeley", "preferredBgUnits": "mmol/L" })),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["city"], "Berkeley");
    assert_eq!(updated["preferredBgUnits"], "mmol/L");
    assert_eq!(updated["name"], "East", "omitted: kept");
    assert_eq!(updated["country"], "US", "omitted: kept");
    assert_eq!(updated["shareCode"], clinic["shareCode"]);
    let at =
        |v: &Value| bson::DateTime::parse_rfc3339_str(v.as_str().expect("time")).expect("RFC 3339");
    assert!(at(&updated["updatedTime"]) >= at(&clinic["updatedTime"]));
    assert_eq!(updated["createdTime"], clinic["createdTime"]);
    let service = api
        .call(
            Method::PUT,
            &path,
            Some(&TestApi::token("clinic-worker", true)),
            Some(json!({ "state": "CA" })),
        )
        .await;
    assert_eq!(service.0, StatusCode::OK);
    assert_eq!(service.1["state"], "CA");
}

#[tokio::test]
async fn update_rejects_invalid_fields_naming_them_and_never_passes_operators_through() {
    let api = TestApi::spawn().await;
    let admin = user();
    let clinic = create(&api, &admin, json!({ "name": "West" })).await;
    let path = format!("/v1/clinics/{}", id(&clinic));
    let token = TestApi::token(&admin, false);

    let cases = [
        (json!({ "clinicSize": "huge" }), "clinicSize"),
        (json!({ "name": "" }), "name"),
        (json!({ "name": { "$gt": "" } }), "name"),
        (json!({ "phoneNumbers": [] }), "phoneNumbers"),
        (
            json!({ "phoneNumbers": [{ "number": 1 }] }),
            "phoneNumbers[0].number",
        ),
        (json!({ "website": "javascript:alert(1)" }), "website"),
        (json!({ "timezone": "Mars/../Olympus" }), "timezone"),
        (
            json!({ "suppressedNotifications": { "everything": true } }),
            "suppressedNotifications",
        ),
    ];
    for (body, field) in cases {
        let answer = api
            .call(Method::PUT, &path, Some(&token), Some(body.clone()))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, field);
    }
    // Keys that look like operators are not fields: ignored, never part of an update.
    let sneaky = api
        .call(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({ "$set": { "admins": [] }, "admins.0": "x", "city": "Ok" })),
        )
        .await;
    assert_eq!(sneaky.0, StatusCode::OK);
    let stored = api
        .db
        .collection::<bson::Document>("clinics")
        .find_one(doc! { "_id": ObjectId::parse_str(id(&clinic)).expect("oid") })
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(stored.get_array("admins").expect("admins").len(), 1);
    assert!(!stored.contains_key("$set") && !stored.contains_key("admins.0"));
    let broken = api
        .send(
            api.request(Method::PUT, &path)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body("{\"name\": "),
        )
        .await;
    assert_error(&broken, StatusCode::BAD_REQUEST, "JSON");
    let huge = api
        .send(
            api.request(Method::PUT, &path)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(format!("{{\"name\": \"{}\"}}", "x".repeat(300 * 1024))),
        )
        .await;
    assert_error(&huge, StatusCode::PAYLOAD_TOO_LARGE, "larger");
}

#[tokio::test]
async fn only_admins_and_services_update_and_only_admins_delete() {
    let api = TestApi::spawn().await;
    let (admin, member, stranger) = (user(), user(), user());
    let clinic = create(&api, &admin, json!({ "name": "South" })).await;
    let oid = ObjectId::parse_str(id(&clinic)).expect("oid");
    api.db
        .collection::<bson::Document>("clinicians")
        .insert_one(doc! { "clinicId": oid, "userId": &member, "roles": ["CLINIC_MEMBER"], "email": "m@example.org" })
        .await
        .expect("member");
    let path = format!("/v1/clinics/{}", id(&clinic));

    for who in [&member, &stranger] {
        let token = TestApi::token(who, false);
        assert_error(
            &api.call(
                Method::PUT,
                &path,
                Some(&token),
                Some(json!({ "city": "X" })),
            )
            .await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
        assert_error(
            &api.call(Method::DELETE, &path, Some(&token), None).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
    }
    let service = TestApi::token("clinic-worker", true);
    assert_error(
        &api.call(Method::DELETE, &path, Some(&service), None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &api.call(Method::PUT, &path, None, Some(json!({ "city": "X" })))
            .await,
        StatusCode::UNAUTHORIZED,
        "token",
    );
}

#[tokio::test]
async fn a_clinic_with_patients_is_not_deleted_and_one_without_is_archived_first() {
    let api = TestApi::spawn().await;
    let admin = user();
    let clinic = create(&api, &admin, json!({ "name": "Gone Soon" })).await;
    let oid = ObjectId::parse_str(id(&clinic)).expect("oid");
    let path = format!("/v1/clinics/{}", id(&clinic));
    let token = TestApi::token(&admin, false);
    let patients = api.db.collection::<bson::Document>("patients");
    patients
        .insert_one(doc! { "clinicId": oid, "userId": user(), "permissions": { "view": {} } })
        .await
        .expect("patient");

    assert_error(
        &api.call(Method::DELETE, &path, Some(&token), None).await,
        StatusCode::CONFLICT,
        "patient",
    );
    patients.delete_many(doc! {}).await.expect("clear");
    let deleted = api.call(Method::DELETE, &path, Some(&token), None).await;

    assert_eq!(deleted, (StatusCode::NO_CONTENT, Value::Null));
    assert_error(
        &api.call(Method::GET, &path, Some(&token), None).await,
        StatusCode::NOT_FOUND,
        "not found",
    );
    let archive = api
        .db
        .collection::<bson::Document>("clinic_deletions")
        .find_one(doc! { "clinic._id": oid })
        .await
        .expect("read")
        .expect("archived");
    assert_eq!(archive.get_str("deletedByUserId"), Ok(admin.as_str()));
    assert_eq!(
        archive
            .get_document("clinic")
            .expect("clinic")
            .get_str("name"),
        Ok("Gone Soon")
    );
    let clinician_archives = api
        .db
        .collection::<bson::Document>("clinician_deletions")
        .count_documents(doc! { "clinician.clinicId": oid })
        .await
        .expect("count");
    assert_eq!(clinician_archives, 1);
    let left = api
        .db
        .collection::<bson::Document>("clinicians")
        .count_documents(doc! { "clinicId": oid })
        .await
        .expect("count");
    assert_eq!(left, 0);
}

#[tokio::test]
async fn listing_clinics_is_for_services_and_filters_by_share_code_and_creation_time() {
    let api = TestApi::spawn().await;
    let first = create(&api, &user(), json!({ "name": "One" })).await;
    let second = create(&api, &user(), json!({ "name": "Two" })).await;
    let service = TestApi::token("clinic-worker", true);

    let (status, all) = api
        .call(Method::GET, "/v1/clinics?limit=10", Some(&service), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all, json!([first.clone(), second.clone()]));
    let code = second["shareCode"].as_str().expect("code");
    let by_code = api
        .call(
            Method::GET,
            &format!("/v1/clinics?shareCode={code}"),
            Some(&service),
            None,
        )
        .await;
    assert_eq!(by_code.1, json!([second.clone()]));
    let since = second["createdTime"].as_str().expect("time");
    let later = api
        .send(
            api.request(Method::GET, "/v1/clinics")
                .bearer_auth(&service)
                .query(&[("createdTimeStart", since)]),
        )
        .await;
    assert_eq!(later.1, json!([second]));
    let paged = api
        .call(
            Method::GET,
            "/v1/clinics?offset=1&limit=1",
            Some(&service),
            None,
        )
        .await;
    assert_eq!(paged.1.as_array().map(Vec::len), Some(1));

    assert_error(
        &api.call(
            Method::GET,
            "/v1/clinics",
            Some(&TestApi::token(&user(), false)),
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &api.call(Method::GET, "/v1/clinics?limit=0", Some(&service), None)
            .await,
        StatusCode::BAD_REQUEST,
        "limit",
    );
    assert_error(
        &api.call(Method::GET, "/v1/clinics?offset=-1", Some(&service), None)
            .await,
        StatusCode::BAD_REQUEST,
        "offset",
    );
    assert_error(
        &api.call(
            Method::GET,
            "/v1/clinics?createdTimeStart=yesterday",
            Some(&service),
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "createdTimeStart",
    );
}

#[tokio::test]
async fn tokens_are_checked_and_tidepools_session_header_is_accepted() {
    let api = TestApi::spawn().await;
    let admin = user();
    let clinic = create(&api, &admin, json!({ "name": "Tokens" })).await;
    let path = format!("/v1/clinics/{}", id(&clinic));

    let session = api
        .send(
            api.request(Method::GET, &path)
                .header("x-tidepool-session-token", TestApi::token(&admin, false)),
        )
        .await;
    assert_eq!(session.0, StatusCode::OK);
    assert_error(
        &api.call(Method::GET, &path, None, None).await,
        StatusCode::UNAUTHORIZED,
        "no token",
    );
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": admin, "exp": 4_000_000_000_u64 }),
        &jsonwebtoken::EncodingKey::from_secret(b"someone else's secret"),
    )
    .expect("token");
    assert_error(
        &api.call(Method::GET, &path, Some(&forged), None).await,
        StatusCode::UNAUTHORIZED,
        "invalid token",
    );
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": admin, "exp": 1_000_000_000_u64 }),
        &jsonwebtoken::EncodingKey::from_secret(super::SECRET.as_bytes()),
    )
    .expect("token");
    assert_error(
        &api.call(Method::GET, &path, Some(&expired), None).await,
        StatusCode::UNAUTHORIZED,
        "invalid token",
    );
    // The operational endpoints answer without a token, on their own port only.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let admin = reqwest::get(format!("{}{path}", api.admin_url()))
            .await
            .expect("admin endpoint");
        assert_eq!(admin.status(), StatusCode::OK, "{path}");
        let public = api.send(api.request(Method::GET, path)).await;
        assert_eq!(public.0, StatusCode::NOT_FOUND, "{path} on the public port");
    }
    assert_error(
        &api.call(
            Method::GET,
            "/v1/nothing",
            Some(&TestApi::token(&admin, false)),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "route",
    );
}

#[tokio::test]
async fn a_restarted_api_finds_its_indexes_and_data_and_keeps_enforcing_them() {
    let first = TestApi::spawn().await;
    let admin = user();
    let clinic = create(&first, &admin, json!({ "name": "Restart" })).await;
    let database = first.db.name().to_owned();

    let second = TestApi::spawn_on(&database).await;

    let got = second
        .call(
            Method::GET,
            &format!("/v1/clinics/{}", id(&clinic)),
            Some(&TestApi::token(&admin, false)),
            None,
        )
        .await;
    assert_eq!(got, (StatusCode::OK, clinic.clone()));
    let service = TestApi::token("clinic-worker", true);
    let invite = |n: u8| json!({ "inviteId": format!("inv-{n}"), "email": format!("inv{n}@example.org"), "roles": ["CLINIC_MEMBER"] });
    let path = format!("/v1/clinics/{}/clinicians", id(&clinic));
    assert_eq!(
        second
            .call(Method::POST, &path, Some(&service), Some(invite(1)))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        second
            .call(Method::POST, &path, Some(&service), Some(invite(2)))
            .await
            .0,
        StatusCode::OK
    );
    assert_error(
        &second
            .call(Method::POST, &path, Some(&service), Some(invite(1)))
            .await,
        StatusCode::CONFLICT,
        "already has",
    );
}

#[tokio::test]
async fn rs256_tokens_verify_with_the_public_key_and_metrics_count_requests_by_route() {
    let fixtures = clinic::testkit::repo_root(0).join("tests/integration/api/fixtures");
    let public =
        std::fs::read_to_string(fixtures.join("test-only-rsa-public.pem")).expect("public key");
    let private = std::fs::read(fixtures.join("test-only-rsa-private.pem")).expect("private key");
    let api = TestApi::spawn_with(|settings| {
        settings.auth.hs256_secret = None;
        settings.auth.rs256_public_key_pem = Some(public);
    })
    .await;
    let user = user();
    let claims = json!({ "sub": user, "exp": 4_000_000_000_u64, "email": "rs@example.org" });
    let signed = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&private).expect("key"),
    )
    .expect("token");

    let (status, clinic) = api
        .call(
            Method::POST,
            "/v1/clinics",
            Some(&signed),
            Some(json!({ "name": "RSA" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{clinic}");
    let hs = api
        .call(
            Method::POST,
            "/v1/clinics",
            Some(&TestApi::token(&user, false)),
            Some(json!({ "name": "HS" })),
        )
        .await;
    assert_error(&hs, StatusCode::UNAUTHORIZED, "invalid token");
    api.call(
        Method::GET,
        &format!("/v1/clinics/{}", id(&clinic)),
        Some(&signed),
        None,
    )
    .await;

    let (status, text) = {
        let response = reqwest::get(format!("{}/metrics", api.admin_url()))
            .await
            .expect("metrics");
        (response.status(), response.text().await.expect("text"))
    };
    assert_eq!(status, StatusCode::OK);
    // Other tests in this process count too (one recorder per process): look for this one's.
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("clinic_api_requests_total")
                && l.contains(r#"route="/v1/clinics/{clinicId}""#)
                && l.contains(r#"method="GET""#)
                && l.contains(r#"status="200""#)
        })
        .unwrap_or_else(|| panic!("no counter for GET /v1/clinics/{{clinicId}} in:\n{text}"));
    let count: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(count >= 1.0, "{line}");
}
