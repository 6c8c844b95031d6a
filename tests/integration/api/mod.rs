//! The CRUD API, black-box: the real server on port 0 against FerretDB from the local stack, a
//! fresh database per test, real HTTP through reqwest, tokens signed like the identity service's.

mod authorization;
mod client;
mod clinicians;
mod clinics;
mod contract;
mod hardening;
mod lifecycle;
mod limits;
mod openapi;
mod patients;
mod tags;
mod validation;

use std::time::{SystemTime, UNIX_EPOCH};

use clinic::api::{ApiSettings, Application};
use clinic::endpoints::Endpoints;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SECRET: &str = "test-secret-of-enough-length-for-hs256";

/// A running API and what a test needs to talk to it.
pub struct TestApi {
    base: String,
    /// The operational endpoints' base URL.
    admin: String,
    client: reqwest::Client,
    /// The test's own database.
    pub db: mongodb::Database,
}

/// A user id in the Tidepool shape (10 hex characters), unique per call.
pub fn user() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// A backend service's token (the worker's).
pub fn service() -> String {
    TestApi::token("clinic-worker", true)
}

impl TestApi {
    /// Starts the API on port 0 over a fresh database.
    pub async fn spawn() -> Self {
        Self::spawn_on(&clinic::testkit::unique("api")).await
    }

    /// Starts the API on port 0 over a fresh database, with settings changed by `adjust`.
    pub async fn spawn_with(adjust: impl FnOnce(&mut ApiSettings)) -> Self {
        Self::start(&clinic::testkit::unique("api"), adjust).await
    }

    /// Starts the API on port 0 over `database` (which may hold data and indexes already).
    pub async fn spawn_on(database: &str) -> Self {
        Self::start(database, |_| {}).await
    }

    /// The base URL of the API.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The base URL of its operational endpoints (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin_url(&self) -> &str {
        &self.admin
    }

    async fn start(database: &str, adjust: impl FnOnce(&mut ApiSettings)) -> Self {
        let endpoints = Endpoints::from_env().expect("endpoints");
        let database = database.to_owned();
        let mut settings = ApiSettings::default();
        settings.http.listen = "127.0.0.1:0".parse().expect("address");
        settings.http.admin_listen = "127.0.0.1:0".parse().expect("address");
        settings.mongo.uri = endpoints.mongo_uri.clone();
        settings.mongo.database = database.clone();
        settings.auth.hs256_secret = Some(SECRET.into());
        adjust(&mut settings);
        let app = Application::build(&settings).await.unwrap_or_else(|e| {
            panic!("the API did not start ({e:#}); is FerretDB up? `scripts/stack up`")
        });
        let base = format!("http://{}", app.address());
        let admin = format!("http://{}", app.admin_address());
        tokio::spawn(app.run(std::future::pending()));
        let db = mongodb::Client::with_uri_str(&endpoints.mongo_uri)
            .await
            .expect("mongo")
            .database(&database);
        Self {
            base,
            admin,
            client: reqwest::Client::new(),
            db,
        }
    }

    /// A token for `user` (a backend service's when `service`), valid for an hour.
    pub fn token(user: &str, service: bool) -> String {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 3_600;
        let mut claims = json!({ "sub": user, "exp": exp, "email": format!("{user}@example.org"), "name": format!("User {user}") });
        if service {
            claims["svr"] = json!("yes");
        }
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("token")
    }

    /// Sends a request with an optional bearer token and JSON body; the status and JSON body
    /// (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// Sends a prepared request; every answer of an operation in the contract is checked
    /// against it (`contract.rs`), so every API test is also a contract test.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let request = request.build().expect("a valid request");
        let (method, path) = (
            request.method().to_string(),
            request.url().path().to_owned(),
        );
        let response = self.client.execute(request).await.expect("the API answers");
        let status = response.status();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}"))
        };
        if let Err(violation) =
            contract::Contract::get().check(&method, &path, status.as_u16(), &body)
        {
            panic!("{violation}");
        }
        (status, body)
    }

    /// A new clinic administered by `admin`; its id.
    pub async fn create_clinic(&self, admin: &str) -> String {
        let (status, clinic) = self
            .call(
                Method::POST,
                "/v1/clinics",
                Some(&Self::token(admin, false)),
                Some(json!({ "name": format!("Clinic of {admin}") })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{clinic}");
        clinic["id"].as_str().expect("id").to_owned()
    }

    /// `body` posted to `path` by a service, answered 200; the answer.
    async fn created(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self
            .call(Method::POST, path, Some(&service()), Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer
    }

    /// `user` made a clinician of `clinic` with `role` (by a service, as the invite flow does).
    pub async fn add_clinician(&self, clinic: &str, user: &str, role: &str) {
        let body = json!({ "id": user, "email": format!("{user}@example.org"), "roles": [role] });
        self.created(&format!("/v1/clinics/{clinic}/clinicians"), body)
            .await;
    }

    /// A pending clinician invite of `clinic` under `invite` (by a service, as hydrophone
    /// stores one), for `<invite>@example.org` as a member.
    pub async fn invite_clinician(&self, clinic: &str, invite: &str) {
        let body = json!({ "inviteId": invite, "email": format!("{invite}@example.org"), "roles": ["CLINIC_MEMBER"] });
        self.created(&format!("/v1/clinics/{clinic}/clinicians"), body)
            .await;
    }

    /// A new patient tag of `clinic` named `name` (by a service); its id.
    pub async fn add_tag(&self, clinic: &str, name: &str) -> String {
        let path = format!("/v1/clinics/{clinic}/patient_tags");
        let tag = self.created(&path, json!({ "name": name })).await;
        tag["id"].as_str().expect("id").to_owned()
    }

    /// A new site of `clinic` named `name` (by a service); its id.
    pub async fn add_site(&self, clinic: &str, name: &str) -> String {
        let path = format!("/v1/clinics/{clinic}/sites");
        let site = self.created(&path, json!({ "name": name })).await;
        site["id"].as_str().expect("id").to_owned()
    }

    /// `user` made a patient of `clinic` sharing view and upload (by a service).
    pub async fn add_patient(&self, clinic: &str, user: &str) {
        let body = json!({ "permissions": { "view": {}, "upload": {} }, "fullName": format!("Patient {user}"), "birthDate": "2000-01-01" });
        self.created(&format!("/v1/clinics/{clinic}/patients/{user}"), body)
            .await;
    }

    /// `clinic` marked migrated, with a pending migration of the legacy clinician `user`.
    pub async fn add_migration(&self, clinic: &str, user: &str) {
        let id = bson::oid::ObjectId::parse_str(clinic).expect("clinic id");
        self.db
            .collection::<bson::Document>("clinics")
            .update_one(
                bson::doc! { "_id": id },
                bson::doc! { "$set": { "isMigrated": true } },
            )
            .await
            .expect("marked migrated");
        let (status, answer) = self
            .call(
                Method::POST,
                &format!("/v1/clinics/{clinic}/migrations"),
                Some(&service()),
                Some(json!({ "userId": user })),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }

    /// `patient` invites `clinic` (by its share code), offering view; the invite's key.
    pub async fn send_invite(&self, clinic: &str, patient: &str) -> String {
        let token = Self::token(patient, false);
        let (_, found) = self
            .call(
                Method::GET,
                &format!("/v1/clinics/{clinic}"),
                Some(&token),
                None,
            )
            .await;
        let body = json!({ "shareCode": found["shareCode"], "permissions": { "view": {} }, "fullName": format!("Patient {patient}"), "birthDate": "2000-01-01" });
        let (status, invite) = self
            .call(
                Method::POST,
                &format!("/confirm/send/invite/{patient}/clinic"),
                Some(&token),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{invite}");
        invite["key"].as_str().expect("key").to_owned()
    }

    /// A request builder for raw cases (headers, bodies).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }
}

/// Asserts an error answer: the status and `{code, message}` with the message containing `says`.
pub fn assert_error(answer: &(StatusCode, Value), status: StatusCode, says: &str) {
    assert_eq!(answer.0, status, "{:?}", answer.1);
    assert_eq!(answer.1["code"], json!(status.as_u16()), "{:?}", answer.1);
    let message = answer.1["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(says),
        "message {message:?} should mention {says:?}"
    );
}
