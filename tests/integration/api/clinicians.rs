//! Clinicians through HTTP: membership, invites and their uniqueness, role changes with their
//! audit trail and the clinic's admins, the last-admin rule, leaving, and a user's clinics.

use bson::doc;
use bson::oid::ObjectId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{TestApi, assert_error, service, user};

async fn add(api: &TestApi, clinic: &str, body: Value) -> (StatusCode, Value) {
    api.call(
        Method::POST,
        &format!("/v1/clinics/{clinic}/clinicians"),
        Some(&service()),
        Some(body),
    )
    .await
}

async fn stored(api: &TestApi, clinic: &str, user: &str) -> bson::Document {
    api.db
        .collection::<bson::Document>("clinicians")
        .find_one(doc! { "clinicId": ObjectId::parse_str(clinic).expect("oid"), "userId": user })
        .await
        .expect("read")
        .expect("stored")
}

async fn admins(api: &TestApi, clinic: &str) -> Vec<String> {
    let stored = api
        .db
        .collection::<bson::Document>("clinics")
        .find_one(doc! { "_id": ObjectId::parse_str(clinic).expect("oid") })
        .await
        .expect("read")
        .expect("clinic");
    let mut admins: Vec<String> = stored
        .get_array("admins")
        .expect("admins")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    admins.sort();
    admins
}

#[tokio::test]
async fn services_add_members_and_invites_and_members_list_them_with_filters() {
    let api = TestApi::spawn().await;
    let (admin, ann, bob) = (user(), user(), user());
    let clinic = api.create_clinic(&admin).await;

    let (status, created) = add(&api, &clinic, json!({ "id": ann, "email": "Ann.Lee@Example.org", "name": "Ann Lee", "roles": ["CLINIC_MEMBER", "PRESCRIBER"] })).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["email"], "ann.lee@example.org");
    assert_eq!(created["id"], json!(ann));
    add(&api, &clinic, json!({ "id": bob, "email": "bob@example.org", "name": "Bob (Admin)", "roles": ["CLINIC_ADMIN"] })).await;
    for invite in ["inv-1", "inv-2"] {
        let (status, body) = add(&api, &clinic, json!({ "inviteId": invite, "email": format!("{invite}@example.org"), "roles": ["CLINIC_MEMBER"] })).await;
        assert_eq!(status, StatusCode::OK, "two invites in one clinic: {body}");
    }
    let member = TestApi::token(&ann, false);
    let list = |query: &str| {
        let path = format!("/v1/clinics/{clinic}/clinicians{query}");
        let (api, member) = (&api, &member);
        async move { api.call(Method::GET, &path, Some(member), None).await }
    };

    let all = list("").await;
    assert_eq!(all.0, StatusCode::OK);
    assert_eq!(all.1.as_array().map(Vec::len), Some(5));
    let names = |v: &Value| {
        v.as_array()
            .expect("array")
            .iter()
            .map(|c| c["email"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&list("?search=LEE").await.1),
        vec!["ann.lee@example.org"]
    );
    assert_eq!(
        names(&list("?search=(admin)").await.1),
        vec!["bob@example.org"],
        "search is literal, not a regex"
    );
    assert_eq!(
        names(&list("?email=BOB@example.org").await.1),
        vec!["bob@example.org"]
    );
    assert_eq!(
        names(&list("?role=PRESCRIBER").await.1),
        vec!["ann.lee@example.org"]
    );
    assert_eq!(
        list("?offset=1&limit=2").await.1.as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(admins(&api, &clinic).await, {
        let mut a = vec![admin.clone(), bob.clone()];
        a.sort();
        a
    });
    assert_error(&list("?role=OWNER").await, StatusCode::BAD_REQUEST, "role");
    let stranger = api
        .call(
            Method::GET,
            &format!("/v1/clinics/{clinic}/clinicians"),
            Some(&TestApi::token(&user(), false)),
            None,
        )
        .await;
    assert_error(&stranger, StatusCode::FORBIDDEN, "forbidden");
    let by_user = api
        .call(
            Method::POST,
            &format!("/v1/clinics/{clinic}/clinicians"),
            Some(&member),
            Some(json!({ "id": user(), "email": "x@example.org", "roles": ["CLINIC_MEMBER"] })),
        )
        .await;
    assert_error(&by_user, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn one_clinician_per_user_invite_and_email_in_a_clinic() {
    let api = TestApi::spawn().await;
    let (admin, ann) = (user(), user());
    let clinic = api.create_clinic(&admin).await;
    add(
        &api,
        &clinic,
        json!({ "id": ann, "email": "ann@example.org", "roles": ["CLINIC_MEMBER"] }),
    )
    .await;
    add(
        &api,
        &clinic,
        json!({ "inviteId": "inv-9", "email": "nine@example.org", "roles": ["CLINIC_MEMBER"] }),
    )
    .await;

    let cases = [
        json!({ "id": ann, "email": "other@example.org", "roles": ["CLINIC_MEMBER"] }),
        json!({ "inviteId": "inv-9", "email": "else@example.org", "roles": ["CLINIC_MEMBER"] }),
        json!({ "id": user(), "email": "ANN@example.org", "roles": ["CLINIC_MEMBER"] }),
    ];
    for body in cases {
        assert_error(
            &add(&api, &clinic, body).await,
            StatusCode::CONFLICT,
            "already has",
        );
    }
    let invalid = [
        (
            json!({ "id": user(), "email": "not-an-address", "roles": ["CLINIC_MEMBER"] }),
            "email",
        ),
        (
            json!({ "id": user(), "email": "a@example.org", "roles": [] }),
            "roles",
        ),
        (
            json!({ "id": user(), "email": "a@example.org", "roles": ["CLINIC_MEMBER", "CLINIC_MEMBER"] }),
            "roles",
        ),
        (
            json!({ "id": user(), "email": "a@example.org", "roles": ["OWNER"] }),
            "roles[0]",
        ),
        (
            json!({ "id": "Robert'); DROP", "email": "a@example.org", "roles": ["CLINIC_MEMBER"] }),
            "id",
        ),
        (
            json!({ "email": "a@example.org", "roles": ["CLINIC_MEMBER"] }),
            "id",
        ),
    ];
    for (body, field) in invalid {
        assert_error(
            &add(&api, &clinic, body).await,
            StatusCode::BAD_REQUEST,
            field,
        );
    }
    let missing = api
        .call(
            Method::POST,
            &format!("/v1/clinics/{}/clinicians", ObjectId::new().to_hex()),
            Some(&service()),
            Some(json!({ "id": user(), "email": "a@example.org", "roles": ["CLINIC_MEMBER"] })),
        )
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not found");
}

#[tokio::test]
async fn role_changes_are_audited_keep_admins_in_step_and_never_drop_the_last_admin() {
    let api = TestApi::spawn().await;
    let (admin, ann) = (user(), user());
    let clinic = api.create_clinic(&admin).await;
    add(
        &api,
        &clinic,
        json!({ "id": ann, "email": "ann@example.org", "roles": ["CLINIC_MEMBER"] }),
    )
    .await;
    let admin_token = TestApi::token(&admin, false);
    let path = |who: &str| format!("/v1/clinics/{clinic}/clinicians/{who}");

    let (status, promoted) = api
        .call(
            Method::PUT,
            &path(&ann),
            Some(&admin_token),
            Some(json!({ "roles": ["CLINIC_ADMIN"], "name": "Ann" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{promoted}");
    assert_eq!(promoted["roles"], json!(["CLINIC_ADMIN"]));
    assert_eq!(promoted["name"], "Ann");
    let audit = stored(&api, &clinic, &ann).await;
    assert_eq!(
        audit.get_array("rolesUpdates").expect("audit"),
        &vec![bson::Bson::Document(
            doc! { "roles": ["CLINIC_ADMIN"], "updatedBy": &admin }
        )]
    );
    assert_eq!(admins(&api, &clinic).await, {
        let mut a = vec![admin.clone(), ann.clone()];
        a.sort();
        a
    });
    // A rename alone adds no audit entry.
    api.call(
        Method::PUT,
        &path(&ann),
        Some(&admin_token),
        Some(json!({ "name": "Ann L." })),
    )
    .await;
    assert_eq!(
        stored(&api, &clinic, &ann)
            .await
            .get_array("rolesUpdates")
            .expect("audit")
            .len(),
        1
    );

    // Both step down: the second would leave none.
    let ann_token = TestApi::token(&ann, false);
    let first = api
        .call(
            Method::PUT,
            &path(&admin),
            Some(&ann_token),
            Some(json!({ "roles": ["CLINIC_MEMBER"] })),
        )
        .await;
    assert_eq!(first.0, StatusCode::OK);
    let last = api
        .call(
            Method::PUT,
            &path(&ann),
            Some(&ann_token),
            Some(json!({ "roles": ["CLINIC_MEMBER"] })),
        )
        .await;
    assert_error(&last, StatusCode::UNPROCESSABLE_ENTITY, "CLINIC_ADMIN");
    assert_eq!(admins(&api, &clinic).await, vec![ann.clone()]);
    let kept = stored(&api, &clinic, &ann).await;
    assert_eq!(
        kept.get_array("roles").expect("roles"),
        &vec![bson::Bson::String("CLINIC_ADMIN".into())]
    );
    assert_eq!(
        kept.get_array("rolesUpdates").expect("audit").len(),
        1,
        "the refused change left no audit entry"
    );

    let by_member = api
        .call(
            Method::PUT,
            &path(&ann),
            Some(&TestApi::token(&admin, false)),
            Some(json!({ "roles": ["CLINIC_MEMBER"] })),
        )
        .await;
    assert_error(&by_member, StatusCode::FORBIDDEN, "forbidden");
    let bad = api
        .call(
            Method::PUT,
            &path(&ann),
            Some(&ann_token),
            Some(json!({ "roles": "CLINIC_ADMIN" })),
        )
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "roles");
    let get = api
        .call(Method::GET, &path(&admin), Some(&ann_token), None)
        .await;
    assert_eq!(get.1["roles"], json!(["CLINIC_MEMBER"]));
    assert_error(
        &api.call(Method::GET, &path(&user()), Some(&ann_token), None)
            .await,
        StatusCode::NOT_FOUND,
        "not found",
    );
}

#[tokio::test]
async fn members_leave_admins_remove_and_the_last_admin_stays() {
    let api = TestApi::spawn().await;
    let (admin, ann, bob) = (user(), user(), user());
    let clinic = api.create_clinic(&admin).await;
    add(
        &api,
        &clinic,
        json!({ "id": ann, "email": "ann@example.org", "roles": ["CLINIC_MEMBER"] }),
    )
    .await;
    add(
        &api,
        &clinic,
        json!({ "id": bob, "email": "bob@example.org", "roles": ["CLINIC_MEMBER"] }),
    )
    .await;
    let path = |who: &str| format!("/v1/clinics/{clinic}/clinicians/{who}");

    let bob_removes_ann = api
        .call(
            Method::DELETE,
            &path(&ann),
            Some(&TestApi::token(&bob, false)),
            None,
        )
        .await;
    assert_error(&bob_removes_ann, StatusCode::FORBIDDEN, "forbidden");
    let ann_leaves = api
        .call(
            Method::DELETE,
            &path(&ann),
            Some(&TestApi::token(&ann, false)),
            None,
        )
        .await;
    assert_eq!(ann_leaves, (StatusCode::OK, Value::Null));
    let admin_removes_bob = api
        .call(
            Method::DELETE,
            &path(&bob),
            Some(&TestApi::token(&admin, false)),
            None,
        )
        .await;
    assert_eq!(admin_removes_bob.0, StatusCode::OK);
    let last = api
        .call(
            Method::DELETE,
            &path(&admin),
            Some(&TestApi::token(&admin, false)),
            None,
        )
        .await;
    assert_error(&last, StatusCode::UNPROCESSABLE_ENTITY, "CLINIC_ADMIN");

    let archived = api
        .db
        .collection::<bson::Document>("clinician_deletions")
        .count_documents(doc! { "clinician.clinicId": ObjectId::parse_str(&clinic).expect("oid") })
        .await
        .expect("count");
    assert_eq!(archived, 2);
    assert_eq!(admins(&api, &clinic).await, vec![admin.clone()]);
    assert_error(
        &api.call(
            Method::DELETE,
            &path(&ann),
            Some(&TestApi::token(&admin, false)),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not found",
    );
}

#[tokio::test]
async fn a_user_sees_their_own_clinics_and_nobody_elses() {
    let api = TestApi::spawn().await;
    let (ann, other) = (user(), user());
    let first = api.create_clinic(&ann).await;
    let second = api.create_clinic(&other).await;
    add(
        &api,
        &second,
        json!({ "id": ann, "email": "ann@example.org", "roles": ["CLINIC_MEMBER"] }),
    )
    .await;
    let path = format!("/v1/clinicians/{ann}/clinics");

    let (status, mine) = api
        .call(Method::GET, &path, Some(&TestApi::token(&ann, false)), None)
        .await;

    assert_eq!(status, StatusCode::OK);
    let clinics: Vec<&str> = mine
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["clinic"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(clinics, vec![first.as_str(), second.as_str()]);
    assert_eq!(mine[1]["clinician"]["roles"], json!(["CLINIC_MEMBER"]));
    assert_eq!(
        api.call(Method::GET, &path, Some(&service()), None).await.0,
        StatusCode::OK
    );
    assert_error(
        &api.call(
            Method::GET,
            &path,
            Some(&TestApi::token(&other, false)),
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
}

#[tokio::test]
async fn admins_deleting_each_other_at_once_leave_an_admin_true_archives_and_no_409() {
    let api = TestApi::spawn().await;
    let (ann, bob) = (user(), user());
    let clinic = api.create_clinic(&ann).await;
    let oid = ObjectId::parse_str(&clinic).expect("oid");
    let archives = || async {
        api.db
            .collection::<bson::Document>("clinician_deletions")
            .count_documents(doc! { "clinician.clinicId": oid })
            .await
            .expect("count")
    };
    let delete = |by: &str, whom: &str| {
        let token = TestApi::token(by, false);
        let path = format!("/v1/clinics/{clinic}/clinicians/{whom}");
        let api = &api;
        async move { api.call(Method::DELETE, &path, Some(&token), None).await }
    };

    for round in 0..25 {
        for who in [&ann, &bob] {
            if api
                .db
                .collection::<bson::Document>("clinicians")
                .find_one(doc! { "clinicId": oid, "userId": who })
                .await
                .expect("read")
                .is_none()
            {
                let (status, body) = add(&api, &clinic, json!({ "id": who, "email": format!("{who}@example.org"), "name": "Admin", "roles": ["CLINIC_ADMIN"] })).await;
                assert_eq!(status, StatusCode::OK, "round {round}: {body}");
            }
        }
        let before = archives().await;

        // Each deletes the other, and Ann asks twice.
        let answers =
            futures::future::join_all([delete(&ann, &bob), delete(&bob, &ann), delete(&ann, &bob)])
                .await;

        let statuses: Vec<StatusCode> = answers.iter().map(|(s, _)| *s).collect();
        assert!(
            statuses.iter().all(|s| [
                StatusCode::OK,
                StatusCode::NOT_FOUND,
                StatusCode::UNPROCESSABLE_ENTITY,
                StatusCode::FORBIDDEN
            ]
            .contains(s)),
            "round {round}: {answers:?}"
        );
        let removed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let present: Vec<bool> = [&ann, &bob]
            .iter()
            .map(|who| {
                let db = api.db.clone();
                let who = (*who).clone();
                async move {
                    db.collection::<bson::Document>("clinicians")
                        .find_one(doc! { "clinicId": oid, "userId": who })
                        .await
                        .expect("read")
                        .is_some()
                }
            })
            .collect::<futures::future::JoinAll<_>>()
            .await;
        assert!(present.iter().any(|p| *p), "round {round}: no admin left");
        assert_eq!(
            removed,
            present.iter().filter(|p| !**p).count(),
            "round {round}: {answers:?} but present {present:?}"
        );
        assert_eq!(
            archives().await - before,
            u64::try_from(removed).expect("few"),
            "round {round}: one archive per deletion that happened"
        );
        let mut expected: Vec<String> = [&ann, &bob]
            .iter()
            .zip(&present)
            .filter(|(_, p)| **p)
            .map(|(who, _)| (*who).clone())
            .collect();
        expected.sort();
        assert_eq!(admins(&api, &clinic).await, expected, "round {round}");
    }
}

#[tokio::test]
async fn an_admin_invites_the_invitee_accepts_and_becomes_a_member_once() {
    let api = TestApi::spawn().await;
    let (admin, joiner, other) = (user(), user(), user());
    let clinic = api.create_clinic(&admin).await;
    let admin_token = TestApi::token(&admin, false);
    let invites = format!("/v1/clinics/{clinic}/invites/clinicians");

    let (status, invited) = api
        .call(
            Method::POST,
            &invites,
            Some(&admin_token),
            Some(json!({ "email": "New.Admin@Example.org", "roles": ["CLINIC_ADMIN"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{invited}");
    let invite = invited["inviteId"].as_str().expect("inviteId").to_owned();
    assert_eq!(invite.len(), 32, "{invited}");
    assert_eq!(invited["email"], "new.admin@example.org");
    assert!(invited.get("id").is_none(), "{invited}");
    // Invited twice, or an address already a member: 409.
    let again = api
        .call(
            Method::POST,
            &invites,
            Some(&admin_token),
            Some(json!({ "email": "new.admin@example.org", "roles": ["CLINIC_MEMBER"] })),
        )
        .await;
    assert_error(&again, StatusCode::CONFLICT, "email");
    // A placeholder is neither an admin nor a member.
    assert_eq!(admins(&api, &clinic).await, vec![admin.clone()]);
    let (status, _) = api
        .call(
            Method::GET,
            &format!("/v1/clinics/{clinic}"),
            Some(&TestApi::token(&joiner, false)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let listed = api
        .call(
            Method::GET,
            &format!("/v1/clinics/{clinic}/patients"),
            Some(&TestApi::token(&joiner, false)),
            None,
        )
        .await;
    assert_eq!(listed.0, StatusCode::FORBIDDEN);

    let placeholder = format!("{invites}/{invite}/clinician");
    let (status, read) = api
        .call(Method::GET, &placeholder, Some(&service()), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["inviteId"], json!(invite));

    let (status, accepted) = api
        .call(
            Method::PATCH,
            &placeholder,
            Some(&service()),
            Some(json!({ "userId": joiner })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{accepted}");
    assert_eq!(accepted["id"], json!(joiner));
    assert!(accepted.get("inviteId").is_none(), "{accepted}");
    assert_eq!(accepted["roles"], json!(["CLINIC_ADMIN"]));
    let stored = stored(&api, &clinic, &joiner).await;
    assert!(!stored.contains_key("inviteId"), "{stored}");
    let mut expected = vec![admin.clone(), joiner.clone()];
    expected.sort();
    assert_eq!(admins(&api, &clinic).await, expected);
    // The member now writes as an admin.
    let (status, _) = api
        .call(
            Method::PUT,
            &format!("/v1/clinics/{clinic}"),
            Some(&TestApi::token(&joiner, false)),
            Some(json!({ "city": "Oslo" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Accepted once: the invite is gone for a second acceptance and a read.
    let twice = api
        .call(
            Method::PATCH,
            &placeholder,
            Some(&service()),
            Some(json!({ "userId": other })),
        )
        .await;
    assert_error(&twice, StatusCode::NOT_FOUND, &invite);
    let gone = api
        .call(Method::GET, &placeholder, Some(&service()), None)
        .await;
    assert_error(&gone, StatusCode::NOT_FOUND, &invite);

    // A user who is a member already cannot take another invite of the clinic.
    let (_, second) = api
        .call(
            Method::POST,
            &invites,
            Some(&admin_token),
            Some(json!({ "email": "second@example.org", "roles": ["CLINIC_MEMBER"] })),
        )
        .await;
    let second = second["inviteId"].as_str().expect("inviteId").to_owned();
    let taken = api
        .call(
            Method::PATCH,
            &format!("{invites}/{second}/clinician"),
            Some(&service()),
            Some(json!({ "userId": joiner })),
        )
        .await;
    assert_error(&taken, StatusCode::CONFLICT, "already a clinician");
    // The refused acceptance left the invite pending.
    let (status, _) = api
        .call(
            Method::GET,
            &format!("{invites}/{second}/clinician"),
            Some(&service()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn pending_invites_are_revoked_by_admins_and_dropped_by_services_and_bad_input_is_400() {
    let api = TestApi::spawn().await;
    let admin = user();
    let clinic = api.create_clinic(&admin).await;
    let admin_token = TestApi::token(&admin, false);
    let invites = format!("/v1/clinics/{clinic}/invites/clinicians");
    let mut ids = Vec::new();
    for address in ["one@example.org", "two@example.org"] {
        let (_, invited) = api
            .call(
                Method::POST,
                &invites,
                Some(&admin_token),
                Some(json!({ "email": address, "roles": ["CLINIC_MEMBER"] })),
            )
            .await;
        ids.push(invited["inviteId"].as_str().expect("inviteId").to_owned());
    }
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("{invites}/{}", ids[0]),
            Some(&admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("{invites}/{}/clinician", ids[1]),
            Some(&service()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for id in &ids {
        let again = api
            .call(
                Method::DELETE,
                &format!("{invites}/{id}"),
                Some(&admin_token),
                None,
            )
            .await;
        assert_error(&again, StatusCode::NOT_FOUND, id);
    }
    let left = api
        .db
        .collection::<bson::Document>("clinicians")
        .count_documents(doc! { "clinicId": ObjectId::parse_str(&clinic).expect("oid") })
        .await
        .expect("count");
    assert_eq!(left, 1, "only the admin is left");
    let refused = api
        .call(
            Method::POST,
            &invites,
            Some(&admin_token),
            Some(json!({ "email": "not an address", "roles": ["CLINIC_MEMBER"] })),
        )
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "email");
    let refused = api
        .call(
            Method::POST,
            &invites,
            Some(&admin_token),
            Some(json!({ "email": "x@example.org", "roles": ["OWNER"] })),
        )
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "roles[0]");
    let refused = api
        .call(
            Method::PATCH,
            &format!("{invites}/{}/clinician", ids[0]),
            Some(&service()),
            Some(json!({ "userId": "not-a-user" })),
        )
        .await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "userId");
    let missing = api
        .call(
            Method::POST,
            &format!(
                "/v1/clinics/{}/invites/clinicians",
                ObjectId::new().to_hex()
            ),
            Some(&service()),
            Some(json!({ "email": "x@example.org", "roles": ["CLINIC_MEMBER"] })),
        )
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "clinic");
}
