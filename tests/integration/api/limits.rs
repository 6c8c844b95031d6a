//! A clinic's MRN rules, its patient limit and its patient count through HTTP.

use bson::doc;
use bson::oid::ObjectId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{TestApi, assert_error, service, user};

async fn custodial(
    api: &TestApi,
    clinic: &str,
    token: &str,
    mrn: Option<&str>,
) -> (StatusCode, Value) {
    let mut body = json!({ "fullName": "Kim Park", "birthDate": "2010-05-06" });
    if let Some(mrn) = mrn {
        body["mrn"] = json!(mrn);
    }
    api.call(
        Method::POST,
        &format!("/v1/clinics/{clinic}/patients"),
        Some(token),
        Some(body),
    )
    .await
}

async fn put(api: &TestApi, path: &str, body: Value) {
    let (status, answer) = api
        .call(Method::PUT, path, Some(&service()), Some(body))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn mrn_settings_make_the_mrn_required_and_unique_on_creation_and_update() {
    let api = TestApi::spawn().await;
    let admin = user();
    let clinic = api.create_clinic(&admin).await;
    let token = TestApi::token(&admin, false);
    let settings = format!("/v1/clinics/{clinic}/settings/mrn");
    let (status, read) = api.call(Method::GET, &settings, Some(&token), None).await;
    assert_eq!(
        (status, read),
        (
            StatusCode::OK,
            json!({ "required": false, "unique": false })
        )
    );
    let (status, _) = custodial(&api, &clinic, &token, None).await;
    assert_eq!(status, StatusCode::OK, "no rules yet");

    put(&api, &settings, json!({ "required": true, "unique": true })).await;
    let (_, read) = api.call(Method::GET, &settings, Some(&token), None).await;
    assert_eq!(read, json!({ "required": true, "unique": true }));
    assert_error(
        &custodial(&api, &clinic, &token, None).await,
        StatusCode::BAD_REQUEST,
        "mrn",
    );
    let (status, first) = custodial(&api, &clinic, &token, Some("M-1")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_error(
        &custodial(&api, &clinic, &token, Some("M-1")).await,
        StatusCode::CONFLICT,
        "mrn",
    );
    let (status, second) = custodial(&api, &clinic, &token, Some("M-2")).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    // An update to another patient's MRN is refused; keeping one's own is not.
    let path = format!(
        "/v1/clinics/{clinic}/patients/{}",
        second["id"].as_str().expect("id")
    );
    assert_error(
        &api.call(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({ "mrn": "M-1" })),
        )
        .await,
        StatusCode::CONFLICT,
        "mrn",
    );
    let (status, kept) = api
        .call(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({ "mrn": "M-2", "fullName": "Kim P." })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    // Another clinic's patients do not count.
    let other = api.create_clinic(&admin).await;
    put(
        &api,
        &format!("/v1/clinics/{other}/settings/mrn"),
        json!({ "required": false, "unique": true }),
    )
    .await;
    let (status, _) = custodial(&api, &other, &token, Some("M-1")).await;
    assert_eq!(status, StatusCode::OK);
    // A service adding an existing user is held to the rules too.
    let refused = api
        .call(
            Method::POST,
            &format!("/v1/clinics/{clinic}/patients/{}", user()),
            Some(&service()),
            Some(json!({ "permissions": { "view": {} }, "fullName": "Lee", "birthDate": "2001-01-01" })),
        )
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "mrn");
    // The settings are services' to change.
    let by_admin = api
        .call(
            Method::PUT,
            &settings,
            Some(&token),
            Some(json!({ "required": false, "unique": false })),
        )
        .await;
    assert_eq!(by_admin.0, StatusCode::FORBIDDEN);
    assert_error(
        &api.call(
            Method::PUT,
            &settings,
            Some(&service()),
            Some(json!({ "required": true })),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "unique",
    );
}

#[tokio::test]
async fn the_hard_limit_answers_402_for_us_clinics_on_the_default_tier_while_it_applies() {
    let api = TestApi::spawn().await;
    let admin = user();
    let clinic = api.create_clinic(&admin).await;
    let token = TestApi::token(&admin, false);
    let settings = format!("/v1/clinics/{clinic}/settings/patient_count");
    let (_, read) = api.call(Method::GET, &settings, Some(&token), None).await;
    assert_eq!(
        read,
        json!({ "hardLimit": { "plan": 250 } }),
        "a new clinic's, as Tidepool's"
    );

    put(
        &api,
        &settings,
        json!({ "hardLimit": { "plan": 2 }, "softLimit": { "plan": 1 } }),
    )
    .await;
    for _ in 0..2 {
        let (status, answer) = custodial(&api, &clinic, &token, None).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    assert_error(
        &custodial(&api, &clinic, &token, None).await,
        StatusCode::PAYMENT_REQUIRED,
        "limit of 2",
    );
    // A patient with a twiist data source does not count towards the plan.
    api.db
        .collection::<bson::Document>("patients")
        .update_one(
            doc! { "clinicId": ObjectId::parse_str(&clinic).expect("oid") },
            doc! { "$set": { "dataSources": [{ "providerName": "twiist", "state": "connected" }, { "providerName": "dexcom", "state": "pending" }] } },
        )
        .await
        .expect("data sources");
    let (status, _) = custodial(&api, &clinic, &token, None).await;
    assert_eq!(status, StatusCode::OK, "the twiist patient is not counted");
    let (status, count) = api
        .call(
            Method::GET,
            &format!("/v1/clinics/{clinic}/patient_count"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        count,
        json!({ "total": 3, "demo": 0, "plan": 2, "providers": {
            "dexcom": { "total": 1, "states": { "pending": 1 } },
            "twiist": { "total": 1, "states": { "connected": 1 } },
        } })
    );
    // Existing users added by services are not limited, as in Tidepool.
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/v1/clinics/{clinic}/patients/{}", user()),
            Some(&service()),
            Some(json!({ "permissions": { "view": {} }, "fullName": "Lee", "birthDate": "2001-01-01" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A limit that starts later does not apply yet.
    put(
        &api,
        &settings,
        json!({ "hardLimit": { "plan": 1, "startDate": "2999-01-01T00:00:00Z" } }),
    )
    .await;
    let (status, _) = custodial(&api, &clinic, &token, None).await;
    assert_eq!(status, StatusCode::OK);
    // A clinic outside the US is unlimited.
    let abroad = api.create_clinic(&admin).await;
    let (status, _) = api
        .call(
            Method::PUT,
            &format!("/v1/clinics/{abroad}"),
            Some(&token),
            Some(json!({ "country": "NO" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    put(
        &api,
        &format!("/v1/clinics/{abroad}/settings/patient_count"),
        json!({ "hardLimit": { "plan": 0 } }),
    )
    .await;
    let (status, _) = custodial(&api, &abroad, &token, None).await;
    assert_eq!(status, StatusCode::OK);
    // Bad settings name the field.
    for (body, field) in [
        (json!({ "hardLimit": { "plan": -1 } }), "hardLimit.plan"),
        (
            json!({ "softLimit": { "plan": 1, "endDate": "tomorrow" } }),
            "softLimit.endDate",
        ),
        (json!({ "hardLimit": {} }), "hardLimit"),
    ] {
        assert_error(
            &api.call(Method::PUT, &settings, Some(&service()), Some(body))
                .await,
            StatusCode::BAD_REQUEST,
            field,
        );
    }
}
